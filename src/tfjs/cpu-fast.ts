// Same-shape float32 Add/Sub/Mul on the pure-JS cpu backend as plain typed-array loops. Hand-written
// because tfjs's cpu kernel runs every element through a closure with two modulo index computations
// (~20 ns per element): tfjs's backprop summing the 11M parameter gradients of ResNet-18's two TRADES
// passes took ~400 ms per step. Every other case (broadcasting, other dtypes) goes to the stock kernel.
import * as tf from '@tensorflow/tfjs';

type Arr = Float32Array;
interface CpuBackend {
  data: { get(id: object): { values: Arr } };
  makeTensorInfo(shape: number[], dtype: string, values: Arr): tf.TensorInfo;
}

const LOOPS: Record<string, (a: Arr, b: Arr, out: Arr) => void> = {
  Add: (a, b, out) => {
    for (let i = 0; i < out.length; i++) out[i] = a[i]! + b[i]!;
  },
  Sub: (a, b, out) => {
    for (let i = 0; i < out.length; i++) out[i] = a[i]! - b[i]!;
  },
  Mul: (a, b, out) => {
    for (let i = 0; i < out.length; i++) out[i] = a[i]! * b[i]!;
  },
};

/** Below this many elements the stock kernel is as fast and the wrapper is not worth a branch. */
const MIN_ELEMENTS = 4096;

let installed = false;
export function installFastCpuKernels(): void {
  if (installed) return;
  installed = true;
  for (const [kernelName, loop] of Object.entries(LOOPS)) {
    const stock = tf.getKernel(kernelName, 'cpu');
    if (!stock) continue;
    tf.unregisterKernel(kernelName, 'cpu');
    tf.registerKernel({
      ...stock,
      kernelFunc: (args) => {
        const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
        const n = a.shape.reduce((p, d) => p * d, 1);
        if (n < MIN_ELEMENTS || a.dtype !== 'float32' || b.dtype !== 'float32' || !tf.util.arraysEqual(a.shape, b.shape)) return stock.kernelFunc(args);
        const backend = args.backend as unknown as CpuBackend;
        const out = new Float32Array(n);
        loop(backend.data.get(a.dataId).values, backend.data.get(b.dataId).values, out);
        return backend.makeTensorInfo([...a.shape], 'float32', out);
      },
    });
  }
}
