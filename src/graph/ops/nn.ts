// Layers: convolution, pooling, normalization, dense products, softmax, reductions.
import { tf } from '../../tfjs/tf.js';
import { nnOps, type Pads2D } from '../../tfjs/kernels.js';
import type { Node } from '../ir.js';
import { Attrs } from '../ir.js';
import type { OpCtx } from '../values.js';
import { defineOp } from './registry.js';
import { broadcastShapes } from '../host.js';

interface Spatial {
  pads: number[]; // begins then ends, one per spatial axis
  strides: number[];
  dilations: number[];
  kernel: number[];
  out: number[];
}

/** Output size and pads of conv/pool windows, with ONNX auto_pad, ceil_mode and dilation rules. */
function spatial(c: OpCtx, inSpatial: number[], kernel: number[], ceil: boolean): Spatial {
  const r = inSpatial.length;
  const strides = c.a.ints('strides', new Array(r).fill(1));
  const dilations = c.a.ints('dilations', new Array(r).fill(1));
  const autoPad = c.a.string('auto_pad', 'NOTSET');
  let pads = c.a.ints('pads', new Array(2 * r).fill(0)).slice();
  if (strides.length !== r || dilations.length !== r || pads.length !== 2 * r) {
    c.fail(`strides/dilations/pads do not match ${r} spatial axes`);
  }
  if (strides.some((s) => s < 1) || dilations.some((d) => d < 1)) c.fail('strides and dilations must be ≥ 1');
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const kd = (kernel[i]! - 1) * dilations[i]! + 1;
    const s = strides[i]!;
    const n = inSpatial[i]!;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      const o = Math.ceil(n / s);
      const total = Math.max(0, (o - 1) * s + kd - n);
      const small = Math.floor(total / 2);
      pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
      pads[i + r] = total - pads[i]!;
      out.push(o);
    } else {
      if (autoPad === 'VALID') {
        pads[i] = 0;
        pads[i + r] = 0;
      } else if (autoPad !== 'NOTSET') c.fail(`auto_pad '${autoPad}' is not valid`);
      const span = n + pads[i]! + pads[i + r]! - kd;
      if (span < 0) c.fail(`kernel ${kernel[i]} (dilation ${dilations[i]}) is larger than the padded input ${n + pads[i]! + pads[i + r]!}`);
      let o = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
      // a window may not start in the end padding (PyTorch/onnxruntime rule for ceil_mode)
      if (ceil && (o - 1) * s >= n + pads[i]!) o--;
      out.push(o);
    }
  }
  return { pads, strides, dilations, kernel, out };
}

/** Lift 1-D (N,C,L) to 2-D (N,C,1,L) so one implementation serves both. */
function to2d(s: Spatial): { strides: [number, number]; dilations: [number, number]; pads: Pads2D; kernel: [number, number]; out: [number, number] } {
  if (s.kernel.length === 1) {
    return { strides: [1, s.strides[0]!], dilations: [1, s.dilations[0]!], pads: [0, s.pads[0]!, 0, s.pads[1]!], kernel: [1, s.kernel[0]!], out: [1, s.out[0]!] };
  }
  return {
    strides: [s.strides[0]!, s.strides[1]!], dilations: [s.dilations[0]!, s.dilations[1]!],
    pads: [s.pads[0]!, s.pads[1]!, s.pads[2]!, s.pads[3]!], kernel: [s.kernel[0]!, s.kernel[1]!], out: [s.out[0]!, s.out[1]!],
  };
}

function spatialRankCheck(rank: number): string | undefined {
  return rank > 2 ? `${rank}-D spatial windows (only 1-D and 2-D are implemented)` : undefined;
}
const kernelRank = (n: Node): number | undefined => new Attrs(n).ints('kernel_shape')?.length;

defineOp('Conv', {
  unsupported: (n) => { const k = kernelRank(n); return k ? spatialRankCheck(k) : undefined; },
  run(c) {
    const x = c.f(0);
    const w = c.f(1);
    if (x.rank !== 3 && x.rank !== 4) c.unsupported(`${x.rank - 2}-D convolution (only 1-D and 2-D are implemented)`);
    if (w.rank !== x.rank) c.fail(`weight of rank ${w.rank} for input of rank ${x.rank}`);
    const group = c.a.int('group', 1);
    if (x.shape[1] !== w.shape[1]! * group) c.fail(`input has ${x.shape[1]} channels, weight expects ${w.shape[1]! * group} (group ${group})`);
    if (w.shape[0]! % group) c.fail(`${w.shape[0]} output channels do not divide into ${group} groups`);
    const kernel = c.a.ints('kernel_shape', w.shape.slice(2));
    const s = to2d(spatial(c, x.shape.slice(2), kernel, false));
    c.checkOutput([x.shape[0]!, w.shape[0]!, ...s.out]);
    const x4 = (x.rank === 3 ? tf.expandDims(x, 2) : x) as tf.Tensor4D;
    const w4 = (w.rank === 3 ? tf.expandDims(w, 2) : w) as tf.Tensor4D;
    let y: tf.Tensor = nnOps().conv2d(x4, w4, { strides: s.strides, pads: s.pads, dilations: s.dilations, group });
    if (c.has(2)) y = tf.add(y, tf.reshape(c.f(2), [1, -1, 1, 1]));
    return [x.rank === 3 ? tf.squeeze(y, [2]) : y];
  },
});

defineOp('ConvTranspose', {
  unsupported: (n) => { const k = kernelRank(n); return k ? spatialRankCheck(k) : undefined; },
  run(c) {
    const x = c.f(0);
    const w = c.f(1);
    if (x.rank !== 3 && x.rank !== 4) c.unsupported(`${x.rank - 2}-D transposed convolution (only 1-D and 2-D are implemented)`);
    const group = c.a.int('group', 1);
    if (x.shape[1] !== w.shape[0]) c.fail(`input has ${x.shape[1]} channels, weight expects ${w.shape[0]}`);
    const r = x.rank - 2;
    const kernel = c.a.ints('kernel_shape', w.shape.slice(2));
    const strides = c.a.ints('strides', new Array(r).fill(1));
    const dilations = c.a.ints('dilations', new Array(r).fill(1));
    const outPad = c.a.ints('output_padding', new Array(r).fill(0));
    const autoPad = c.a.string('auto_pad', 'NOTSET');
    let pads = c.a.ints('pads', new Array(2 * r).fill(0)).slice();
    const outputShape = c.a.ints('output_shape');
    const inSp = x.shape.slice(2);
    if (outputShape || autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      const target = outputShape ? outputShape.slice(-r) : inSp.map((n, i) => n * strides[i]!);
      for (let i = 0; i < r; i++) {
        const full = strides[i]! * (inSp[i]! - 1) + outPad[i]! + (kernel[i]! - 1) * dilations[i]! + 1;
        const total = full - target[i]!;
        if (total < 0) {
          // the requested output is larger than the full one: extra rows/columns at the end
          pads[i] = 0;
          pads[i + r] = total;
          continue;
        }
        const half = Math.floor(total / 2);
        // onnxruntime puts the odd pad at the end unless SAME_LOWER (the spec text says the opposite for NOTSET)
        pads[i] = autoPad === 'SAME_LOWER' ? total - half : half;
        pads[i + r] = total - pads[i]!;
      }
    } else if (autoPad === 'VALID') pads = new Array(2 * r).fill(0);
    c.checkOutput([x.shape[0]!, w.shape[1]! * group, ...inSp.map((n, i) => strides[i]! * (n - 1) + outPad[i]! + (kernel[i]! - 1) * dilations[i]! + 1 - pads[i]! - pads[i + r]!)]);
    const lift = r === 1;
    const x4 = (lift ? tf.expandDims(x, 2) : x) as tf.Tensor4D;
    const w4 = (lift ? tf.expandDims(w, 2) : w) as tf.Tensor4D;
    const p2: Pads2D = lift ? [0, pads[0]!, 0, pads[1]!] : [pads[0]!, pads[1]!, pads[2]!, pads[3]!];
    let y: tf.Tensor = nnOps().convTranspose2d(x4, w4, {
      strides: lift ? [1, strides[0]!] : [strides[0]!, strides[1]!],
      dilations: lift ? [1, dilations[0]!] : [dilations[0]!, dilations[1]!],
      pads: p2, group,
      outputPadding: lift ? [0, outPad[0]!] : [outPad[0]!, outPad[1]!],
    });
    if (c.has(2)) y = tf.add(y, tf.reshape(c.f(2), [1, -1, 1, 1]));
    return [lift ? tf.squeeze(y, [2]) : y];
  },
});

function pool(kind: 'max' | 'avg') {
  return (c: OpCtx) => {
    const x = c.f(0);
    if (x.rank !== 3 && x.rank !== 4) c.unsupported(`${x.rank - 2}-D pooling (only 1-D and 2-D are implemented)`);
    const kernel = c.a.ints('kernel_shape');
    if (!kernel) c.fail(`attribute 'kernel_shape' is required`);
    if (kernel.length !== x.rank - 2) c.fail(`kernel_shape [${kernel}] does not match input rank ${x.rank}`);
    const ceil = c.opset >= 10 && c.a.int('ceil_mode', 0) === 1;
    const s = to2d(spatial(c, x.shape.slice(2), kernel, ceil));
    c.checkOutput([x.shape[0]!, x.shape[1]!, ...s.out]);
    const x4 = (x.rank === 3 ? tf.expandDims(x, 2) : x) as tf.Tensor4D;
    const p = { kernel: s.kernel, strides: s.strides, dilations: s.dilations, pads: s.pads, out: s.out };
    const y = kind === 'max' ? nnOps().maxPool2d(x4, p) : nnOps().avgPool2d(x4, p, c.a.int('count_include_pad', 0) === 1);
    return [x.rank === 3 ? tf.squeeze(y, [2]) : y];
  };
}
defineOp('MaxPool', {
  unsupported(n) {
    if (n.outputs.length > 1 && n.outputs[1]) return 'the Indices output';
    const k = kernelRank(n);
    return k ? spatialRankCheck(k) : undefined;
  },
  run: pool('max'),
});
defineOp('AveragePool', {
  unsupported(n) {
    const d = new Attrs(n).ints('dilations');
    if (d && d.some((v) => v !== 1)) return 'dilations';
    const k = kernelRank(n);
    return k ? spatialRankCheck(k) : undefined;
  },
  run: pool('avg'),
});
defineOp('GlobalAveragePool', { run: (c) => [tf.mean(c.f(0), range(2, c.rank(0)), true)] });
defineOp('GlobalMaxPool', { run: (c) => [tf.max(c.f(0), range(2, c.rank(0)), true)] });

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}

/** Per-channel parameter reshaped to broadcast over (N, C, ...). */
function chan(t: tf.Tensor, rank: number): tf.Tensor {
  return rank <= 2 ? t : tf.reshape(t, [-1, ...new Array(rank - 2).fill(1)]);
}

defineOp('BatchNormalization', {
  unsupported(n, opset) {
    if (opset < 9 && new Attrs(n).int('spatial', 1) !== 1) return 'spatial=0';
    return undefined;
  },
  run(c) {
    const x = c.f(0);
    const r = x.rank;
    const eps = c.a.float('epsilon', 1e-5);
    const momentum = c.a.float('momentum', 0.9);
    const scale = chan(c.f(1), r);
    const bias = chan(c.f(2), r);
    const attrTraining = c.opset >= 14 && c.a.int('training_mode', 0) === 1;
    if (!c.training && !attrTraining) {
      // inference form folded into one multiply-add: y = x·a + b
      const a = tf.mul(scale, tf.rsqrt(tf.add(chan(c.f(4), r), eps)));
      const b = tf.sub(bias, tf.mul(chan(c.f(3), r), a));
      return [tf.add(tf.mul(x, a), b)];
    }
    const axes = [0, ...range(2, r)];
    const { mean, variance } = tf.moments(x, axes, true);
    const y = tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), scale), bias);
    // running statistics: running = running·momentum + batch·(1 − momentum) (not part of any loss)
    const runMean = tf.add(tf.mul(c.f(3), momentum), tf.mul(tf.reshape(mean, [-1]), 1 - momentum));
    const runVar = tf.add(tf.mul(c.f(4), momentum), tf.mul(tf.reshape(variance, [-1]), 1 - momentum));
    if (c.training) {
      c.env.updates.set(c.node.inputs[3]!, runMean);
      c.env.updates.set(c.node.inputs[4]!, runVar);
    }
    return [y, runMean, runVar];
  },
});

defineOp('InstanceNormalization', {
  run(c) {
    const x = c.f(0);
    const r = x.rank;
    const { mean, variance } = tf.moments(x, range(2, r), true);
    const y = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, c.a.float('epsilon', 1e-5))));
    return [tf.add(tf.mul(y, chan(c.f(1), r)), chan(c.f(2), r))];
  },
});

defineOp('LayerNormalization', {
  run(c) {
    const x = c.f(0);
    const axis = c.axis(c.a.int('axis', -1), x.rank);
    const axes = range(axis, x.rank);
    const { mean, variance } = tf.moments(x, axes, true);
    const inv = tf.rsqrt(tf.add(variance, c.a.float('epsilon', 1e-5)));
    let y = tf.mul(tf.mul(tf.sub(x, mean), inv), c.f(1));
    if (c.has(2)) y = tf.add(y, c.f(2));
    return [y, mean, inv];
  },
});

defineOp('Gemm', {
  run(c) {
    let a = c.f(0);
    let b = c.f(1);
    if (a.rank !== 2 || b.rank !== 2) c.fail(`inputs must be matrices, got ranks ${a.rank} and ${b.rank}`);
    const transA = c.a.int('transA', 0) === 1;
    const transB = c.a.int('transB', 0) === 1;
    const k1 = transA ? a.shape[0] : a.shape[1];
    const k2 = transB ? b.shape[1] : b.shape[0];
    if (k1 !== k2) c.fail(`inner dimensions differ: A gives ${k1}, B gives ${k2}`);
    c.checkOutput([transA ? a.shape[1]! : a.shape[0]!, transB ? b.shape[0]! : b.shape[1]!]);
    let y = tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D, transA, transB);
    const alpha = c.a.float('alpha', 1);
    if (alpha !== 1) y = tf.mul(y, alpha);
    if (c.has(2)) {
      const beta = c.a.float('beta', 1);
      const cc = c.f(2);
      y = tf.add(y, beta === 1 ? cc : tf.mul(cc, beta));
    }
    return [y];
  },
});

defineOp('MatMul', {
  run(c) {
    let a = c.f(0);
    let b = c.f(1);
    const aVec = a.rank === 1;
    const bVec = b.rank === 1;
    if (aVec) a = tf.reshape(a, [1, -1]);
    if (bVec) b = tf.reshape(b, [-1, 1]);
    if (a.shape[a.rank - 1] !== b.shape[b.rank - 2]) c.fail(`inner dimensions differ: [${c.shape(0)}] × [${c.shape(1)}]`);
    c.checkOutput([...broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), `${c.node.label}: `), a.shape[a.rank - 2]!, b.shape[b.rank - 1]!]);
    let y: tf.Tensor;
    if (b.rank === 2 && a.rank > 2) {
      // (…, M, K) × (K, N): one 2-D product
      const lead = a.shape.slice(0, -1);
      y = tf.reshape(tf.matMul(tf.reshape(a, [-1, a.shape[a.rank - 1]!]) as tf.Tensor2D, b as tf.Tensor2D), [...lead, b.shape[1]!]);
    } else {
      y = tf.matMul(a, b);
    }
    if (aVec) y = tf.squeeze(y, [y.rank - 2]);
    if (bVec) y = tf.squeeze(y, [y.rank - 1]);
    return [y];
  },
});

/** Softmax-like ops: opset < 13 flattens to 2-D at `axis` (default 1); opset ≥ 13 works on one axis (default -1). */
function softmaxLike(fn: (x: tf.Tensor) => tf.Tensor) {
  return (c: OpCtx) => {
    const x = c.f(0);
    const shape = x.shape;
    if (c.opset < 13) {
      const axis = c.axis(c.a.int('axis', 1), x.rank);
      const rows = shape.slice(0, axis).reduce((p, v) => p * v, 1);
      return [tf.reshape(fn(tf.reshape(x, [rows, -1])), shape)];
    }
    const axis = c.axis(c.a.int('axis', -1), x.rank);
    if (axis === x.rank - 1) return [fn(x)];
    const perm = range(0, x.rank);
    perm[axis] = x.rank - 1;
    perm[x.rank - 1] = axis;
    return [tf.transpose(fn(tf.transpose(x, perm)), perm)];
  };
}
defineOp('Softmax', { run: softmaxLike((x) => tf.softmax(x)) });
defineOp('LogSoftmax', { run: softmaxLike((x) => tf.logSoftmax(x)) });
defineOp('Hardmax', {
  run: softmaxLike((x) => {
    const last = x.shape[x.rank - 1]!;
    return tf.oneHot(tf.argMax(x, -1), last, 1, 0, 'float32');
  }),
});

// Reductions. Axes: attribute before opset 18 (ReduceSum: before 13), input after.
function reduce(name: string, fn: (x: tf.Tensor, axes: number[], keep: boolean) => tf.Tensor, axesInputSince = 18): void {
  defineOp(name, {
    run(c) {
      let x = c.t(0);
      if (x.dtype === 'bool') x = tf.cast(x, 'int32');
      let axes: number[] | undefined;
      if (c.opset >= axesInputSince) axes = c.has(1) ? c.ints(1) : undefined;
      else axes = c.a.ints('axes');
      const keep = c.a.int('keepdims', 1) === 1;
      if (!axes || axes.length === 0) {
        if (c.a.int('noop_with_empty_axes', 0) === 1) return [x];
        axes = range(0, x.rank);
      }
      axes = axes.map((a) => c.axis(a, x.rank));
      return [fn(x, axes, keep)];
    },
  });
}
reduce('ReduceMean', (x, a, k) => tf.mean(x, a, k));
reduce('ReduceSum', (x, a, k) => tf.sum(x, a, k), 13);
reduce('ReduceMax', (x, a, k) => tf.max(x, a, k));
reduce('ReduceMin', (x, a, k) => tf.min(x, a, k));
reduce('ReduceProd', (x, a, k) => tf.prod(x, a, k));
reduce('ReduceL1', (x, a, k) => tf.sum(tf.abs(x), a, k));
reduce('ReduceL2', (x, a, k) => tf.sqrt(tf.sum(tf.square(x), a, k)));
reduce('ReduceSumSquare', (x, a, k) => tf.sum(tf.square(x), a, k));
reduce('ReduceLogSum', (x, a, k) => tf.log(tf.sum(x, a, k)));
reduce('ReduceLogSumExp', (x, a, k) => tf.logSumExp(x, a, k));

function argReduce(isMax: boolean) {
  return (c: OpCtx) => {
    const x = c.f(0);
    const axis = c.axis(c.a.int('axis', 0), x.rank);
    const last = c.a.int('select_last_index', 0) === 1;
    const src = last ? tf.reverse(x, [axis]) : x;
    let idx: tf.Tensor = isMax ? tf.argMax(src, axis) : tf.argMin(src, axis);
    if (last) idx = tf.sub(tf.scalar(x.shape[axis]! - 1, 'int32'), idx);
    if (c.a.int('keepdims', 1) === 1) idx = tf.expandDims(idx, axis);
    return [idx];
  };
}
defineOp('ArgMax', { run: argReduce(true) });
defineOp('ArgMin', { run: argReduce(false) });

defineOp('Dropout', {
  run(c) {
    const x = c.val(0);
    let ratio = 0.5;
    let trainingMode = false;
    if (c.opset >= 12) {
      if (c.has(1)) ratio = c.scalar(1);
      if (c.has(2)) trainingMode = c.scalar(2) !== 0;
    } else ratio = c.a.float('ratio', 0.5);
    if ((c.training || trainingMode) && ratio > 0) {
      const t = c.f(0);
      const keep = tf.cast(tf.greaterEqual(tf.randomUniform(t.shape), ratio), 'float32');
      return [tf.div(tf.mul(t, keep), 1 - ratio), tf.cast(keep, 'bool')];
    }
    return [x, tf.cast(tf.onesLike(c.t(0)), 'bool')];
  },
});
