// Reductions, Softmax-like ops and arg-extrema. Each has one spec: forward, gradient, bounds.
import { tf } from '../tfjs/tf.js';
import { reduceAxesFromInput, softmaxAxis } from '../onnx/semantics.js';
import type { OpCtx } from './values.js';
import { COMPILED_OPSET, defineOp, type ForwardRule, type GradCtx, type GradRule, type NoGradient } from './spec.js';
import { dy0, range } from './grad.js';

/** Softmax-like ops: opset < 13 flattens to 2-D at `axis` (default 1); opset ≥ 13 works on one axis (default -1). */
function softmaxLike(fn: (x: tf.Tensor) => tf.Tensor): ForwardRule {
  return {
    run(c: OpCtx) {
      const x = c.f(0);
      const shape = x.shape;
      const { coerce2d } = softmaxAxis(c.opset, c.a.int('axis'), x.rank);
      const axis = c.axis(c.a.int('axis', coerce2d ? 1 : -1), x.rank);
      if (coerce2d) {
        const rows = shape.slice(0, axis).reduce((p, v) => p * v, 1);
        return [tf.reshape(fn(tf.reshape(x, [rows, -1])), shape)];
      }
      if (axis === x.rank - 1) return [fn(x)];
      const perm = range(0, x.rank);
      perm[axis] = x.rank - 1;
      perm[x.rank - 1] = axis;
      return [tf.transpose(fn(tf.transpose(x, perm)), perm)];
    },
  };
}

/** Softmax and LogSoftmax at opset 18 (one axis; older models are lowered to it first). */
const softmaxGrad: GradRule = (g) => {
  const y = g.y(0);
  const dy = dy0(g);
  const axis = softmaxAxis(COMPILED_OPSET, g.a.int('axis'), g.outShape(0).length).axis;
  if (g.node.opType === 'Softmax') {
    const s = g.b.reduce('ReduceSum', g.b.op('Mul', [dy, y]), [axis], true);
    return [g.b.op('Mul', [y, g.b.op('Sub', [dy, s])])];
  }
  const s = g.b.reduce('ReduceSum', dy, [axis], true);
  return [g.b.op('Sub', [dy, g.b.op('Mul', [g.b.op('Exp', [y]), s])])];
};
const STEP: NoGradient = { none: 'piecewise-constant output (zero gradient almost everywhere)' };

defineOp({ type: 'Softmax', forward: softmaxLike((x) => tf.softmax(x)), grad: softmaxGrad });
defineOp({ type: 'LogSoftmax', forward: softmaxLike((x) => tf.logSoftmax(x)), grad: softmaxGrad });
defineOp({
  type: 'Hardmax',
  forward: softmaxLike((x) => {
    const last = x.shape[x.rank - 1]!;
    return tf.oneHot(tf.argMax(x, -1), last, 1, 0, 'float32');
  }),
  grad: STEP,
});

/** Reductions: axes from the attribute before opset 18 (ReduceSum: before 13), from input 1 since. */
function reduce(fn: (x: tf.Tensor, axes: number[], keep: boolean) => tf.Tensor): ForwardRule {
  return {
    run(c) {
      let x = c.t(0);
      if (x.dtype === 'bool') x = tf.cast(x, 'int32');
      let axes: number[] | undefined;
      if (reduceAxesFromInput(c.node.opType, c.opset)) axes = c.has(1) ? c.ints(1) : undefined;
      else axes = c.a.ints('axes');
      const keep = c.a.int('keepdims', 1) === 1;
      if (!axes || axes.length === 0) {
        if (c.a.int('noop_with_empty_axes', 0) === 1) return [x];
        axes = range(0, x.rank);
      }
      axes = axes.map((a) => c.axis(a, x.rank));
      return [fn(x, axes, keep)];
    },
  };
}

/** Reduced axes of a node at opset 18, sorted and non-negative (all axes when none are given). */
function axesOf(g: GradCtx, rank: number): number[] {
  const fromInput = reduceAxesFromInput(g.node.opType, COMPILED_OPSET);
  let axes = fromInput ? (g.has(1) ? g.ints(1) : []) : g.a.ints('axes', []);
  if (!axes.length) axes = range(0, rank);
  return axes.map((a) => (a < 0 ? a + rank : a)).sort((p, q) => p - q);
}
const sumGrad: GradRule = (g) => {
    const xs = g.inShape(0);
    const axes = axesOf(g, xs.length);
    const keep = g.a.int('keepdims', 1) === 1;
    let d = dy0(g);
    if (!keep) d = g.b.reshape(d, xs.map((v, i) => (axes.includes(i) ? 1 : v)));
    if (g.node.opType === 'ReduceMean') d = g.b.op('Div', [d, g.b.scalarF(axes.reduce((p, a) => p * xs[a]!, 1))]);
    return [g.b.op('Expand', [d, g.b.constI64(xs)])];
  };
/** dy of a reduction, reshaped to keep its reduced axes (size 1) so that it broadcasts against x. */
function keptDy(g: GradCtx, axes: number[]): { dy: string; y: string } {
  const xs = g.inShape(0);
  const kept = xs.map((v, i) => (axes.includes(i) ? 1 : v));
  const keep = g.a.int('keepdims', 1) === 1;
  return { dy: keep ? dy0(g) : g.b.reshape(dy0(g), kept), y: keep ? g.y(0) : g.b.reshape(g.y(0), kept) };
}
const reduceRule = (local: (g: GradCtx, x: string, y: string) => string) => (g: GradCtx): (string | undefined)[] => {
  const axes = axesOf(g, g.inShape(0).length);
  const { dy, y } = keptDy(g, axes);
  return [g.b.op('Mul', [dy, local(g, g.x(0), y)]), undefined];
};
const SUM_BOUNDS = { ibp: 'monotone', dataInput0: true, crown: {} } as const;
const EXTREMUM_BOUNDS = { ibp: 'monotone', dataInput0: true } as const;

defineOp({ type: 'ReduceMean', forward: reduce((x, a, k) => tf.mean(x, a, k)), grad: sumGrad, bounds: SUM_BOUNDS });
defineOp({ type: 'ReduceSum', forward: reduce((x, a, k) => tf.sum(x, a, k)), grad: sumGrad, bounds: SUM_BOUNDS });
// the extremum's gradient goes to the elements equal to it (to each of them on ties, as tfjs)
const extremumGrad = reduceRule((g, x, y) => g.b.op('Cast', [g.b.op('Equal', [x, y])], { to: 1 }));
defineOp({ type: 'ReduceMax', forward: reduce((x, a, k) => tf.max(x, a, k)), grad: extremumGrad, bounds: EXTREMUM_BOUNDS });
defineOp({ type: 'ReduceMin', forward: reduce((x, a, k) => tf.min(x, a, k)), grad: extremumGrad, bounds: EXTREMUM_BOUNDS });
defineOp({ type: 'ReduceProd', forward: reduce((x, a, k) => tf.prod(x, a, k)), grad: reduceRule((g, x, y) => g.b.op('Div', [y, x])) });
defineOp({ type: 'ReduceL1', forward: reduce((x, a, k) => tf.sum(tf.abs(x), a, k)), grad: reduceRule((g, x) => g.b.op('Sign', [x])) });
defineOp({ type: 'ReduceL2', forward: reduce((x, a, k) => tf.sqrt(tf.sum(tf.square(x), a, k))), grad: reduceRule((g, x, y) => g.b.op('Div', [x, y])) });
defineOp({ type: 'ReduceSumSquare', forward: reduce((x, a, k) => tf.sum(tf.square(x), a, k)), grad: reduceRule((g, x) => g.b.op('Mul', [x, g.b.scalarF(2)])) });
defineOp({
  type: 'ReduceLogSum', forward: reduce((x, a, k) => tf.log(tf.sum(x, a, k))),
  grad: reduceRule((g, x, y) => g.b.op('Expand', [g.b.op('Exp', [g.b.op('Neg', [y])]), g.b.op('Shape', [x])])),
});
defineOp({
  type: 'ReduceLogSumExp', forward: reduce((x, a, k) => tf.logSumExp(x, a, k)),
  grad: reduceRule((g, x, y) => g.b.op('Exp', [g.b.op('Sub', [x, y])])),
});

function argReduce(isMax: boolean): ForwardRule {
  return {
    run(c) {
      const x = c.f(0);
      const axis = c.axis(c.a.int('axis', 0), x.rank);
      const last = c.a.int('select_last_index', 0) === 1;
      const src = last ? tf.reverse(x, [axis]) : x;
      let idx: tf.Tensor = isMax ? tf.argMax(src, axis) : tf.argMin(src, axis);
      if (last) idx = tf.sub(tf.scalar(x.shape[axis]! - 1, 'int32'), idx);
      if (c.a.int('keepdims', 1) === 1) idx = tf.expandDims(idx, axis);
      return [idx];
    },
  };
}
defineOp({ type: 'ArgMax', forward: argReduce(true), grad: STEP });
defineOp({ type: 'ArgMin', forward: argReduce(false), grad: STEP });
