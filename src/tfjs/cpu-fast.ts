// Float32 Add/Sub/Multiply on the pure-JS cpu backend as plain typed-array loops, for same-shape operands and
// for one operand repeated over the other's leading or trailing axes (a scalar, a row, a column).
// Hand-written because tfjs's cpu kernel runs every element through a closure with two modulo index
// computations (~20 ns per element), and every broadcast element through index arrays: tfjs's backprop
// summing the 11M parameter gradients of ResNet-18's two TRADES passes took ~400 ms per step (now ~100),
// and the small CNN's loss ops on [128, 10] logits ~2.5 ms per step. Every other case goes to the stock kernel.
import * as tf from '@tensorflow/tfjs';

type Arr = Float32Array;
interface CpuBackend {
  data: { get(id: object): { values: Arr } };
  makeTensorInfo(shape: number[], dtype: string, values: Arr): tf.TensorInfo;
}
type Op = (x: number, y: number) => number;

/**
 * Per kernel: the operation (for broadcasts) and its same-shape loop written out (a shared loop calling
 * `op` runs 1.5-2x slower on 11M floats).
 */
const KERNELS: Record<string, { op: Op; sameShape: (a: Arr, b: Arr, out: Arr) => void }> = {
  Add: {
    op: (x, y) => x + y,
    sameShape: (a, b, out) => {
      for (let i = 0; i < out.length; i++) out[i] = a[i]! + b[i]!;
    },
  },
  Sub: {
    op: (x, y) => x - y,
    sameShape: (a, b, out) => {
      for (let i = 0; i < out.length; i++) out[i] = a[i]! - b[i]!;
    },
  },
  Multiply: {
    op: (x, y) => x * y,
    sameShape: (a, b, out) => {
      for (let i = 0; i < out.length; i++) out[i] = a[i]! * b[i]!;
    },
  },
};

/**
 * How `small` (shape s) repeats over `big` (shape b, the result's): `inner` copies of each of its values in
 * a row (s = b with trailing axes 1) or the whole of it `outer` times (s = b with leading axes 1, or fewer
 * axes). Undefined when it does neither.
 */
function repeatOf(s: readonly number[], b: readonly number[]): { inner: number } | { outer: number } | undefined {
  const padded = [...new Array(b.length - s.length).fill(1), ...s];
  let k = padded.length;
  while (k > 0 && padded[k - 1] === 1) k--;
  if (padded.slice(0, k).every((d, i) => d === b[i])) return { inner: b.slice(k).reduce((p, d) => p * d, 1) };
  let j = 0;
  while (j < padded.length && padded[j] === 1) j++;
  if (padded.slice(j).every((d, i) => d === b[j + i])) return { outer: b.slice(0, j).reduce((p, d) => p * d, 1) };
  return undefined;
}

/** out = op(big, small) (or op(small, big) with `swapped`), small repeated as `how` says. */
function broadcastLoop(op: Op, big: Arr, small: Arr, out: Arr, how: { inner: number } | { outer: number }, swapped: boolean): void {
  if ('inner' in how) {
    const inner = how.inner;
    for (let i = 0, o = 0; i < small.length; i++) {
      const v = small[i]!;
      if (swapped) for (let k = 0; k < inner; k++, o++) out[o] = op(v, big[o]!);
      else for (let k = 0; k < inner; k++, o++) out[o] = op(big[o]!, v);
    }
    return;
  }
  const m = small.length;
  for (let r = 0, o = 0; r < how.outer; r++) {
    if (swapped) for (let k = 0; k < m; k++, o++) out[o] = op(small[k]!, big[o]!);
    else for (let k = 0; k < m; k++, o++) out[o] = op(big[o]!, small[k]!);
  }
}

let installed: string[] | undefined;
/** The kernels (tfjs kernel names) that run the loops above: every key of KERNELS unless tfjs lacks one. */
export function fastCpuKernels(): readonly string[] {
  return installed ?? [];
}

export function installFastCpuKernels(): void {
  if (installed) return;
  installed = [];
  for (const [kernelName, { op, sameShape }] of Object.entries(KERNELS)) {
    const stock = tf.getKernel(kernelName, 'cpu');
    if (!stock) continue;
    installed.push(kernelName);
    tf.unregisterKernel(kernelName, 'cpu');
    tf.registerKernel({
      ...stock,
      kernelFunc: (args) => {
        const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
        if (a.dtype !== 'float32' || b.dtype !== 'float32') return stock.kernelFunc(args);
        const backend = args.backend as unknown as CpuBackend;
        if (tf.util.arraysEqual(a.shape, b.shape)) {
          const out = new Float32Array(tf.util.sizeFromShape(a.shape));
          sameShape(backend.data.get(a.dataId).values, backend.data.get(b.dataId).values, out);
          return backend.makeTensorInfo([...a.shape], 'float32', out);
        }
        const shape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
        const aBig = tf.util.arraysEqual(a.shape, shape);
        if (!aBig && !tf.util.arraysEqual(b.shape, shape)) return stock.kernelFunc(args);
        const [big, small] = aBig ? [a, b] : [b, a];
        const how = repeatOf(small.shape, shape);
        if (!how) return stock.kernelFunc(args);
        const out = new Float32Array(tf.util.sizeFromShape(shape));
        broadcastLoop(op, backend.data.get(big.dataId).values, backend.data.get(small.dataId).values, out, how, !aBig);
        return backend.makeTensorInfo([...shape], 'float32', out);
      },
    });
  }
}
