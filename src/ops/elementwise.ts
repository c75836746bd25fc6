// Elementwise operators: arithmetic with numpy broadcasting (as ONNX defines it), comparisons and logic,
// activations, and the variadic Sum/Mean/Max/Min. Each has one spec: forward, gradient, bounds.
import { tf } from '../tfjs/tf.js';
import { allocate, isFloat, type HostTensor } from '../onnx/tensor.js';
import { broadcastIndex, broadcastShapes, hostBinary, hostUnary } from './host.js';
import type { OpCtx } from './values.js';
import { defineOp, type ForwardRule, type GradCtx, type GradRule, type IbpRule, type NoGradient } from './spec.js';
import { dy0, reduceTo, zero } from './grad.js';

/** Both inputs as tf tensors of one dtype (float32 wins over int32), their broadcast size checked first. */
function pair(c: OpCtx, i = 0, j = 1): [tf.Tensor, tf.Tensor] {
  let a = c.t(i);
  let b = c.t(j);
  c.checkOutput(broadcastShapes(a.shape, b.shape, `${c.node.label}: `));
  if (a.dtype !== b.dtype) {
    if (a.dtype === 'float32' || b.dtype === 'float32') {
      a = a.dtype === 'float32' ? a : tf.cast(a, 'float32');
      b = b.dtype === 'float32' ? b : tf.cast(b, 'float32');
    } else {
      a = tf.cast(a, 'int32');
      b = tf.cast(b, 'int32');
    }
  }
  return [a, b];
}

type NumFn = (x: number, y: number) => number | boolean;
type BigFn = (x: bigint, y: bigint) => bigint | boolean;

function binary(name: string, tfFn: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, num: NumFn, big?: BigFn, bool = false): ForwardRule {
  return {
    run(c) {
      if (c.allHost()) {
        const a = c.h(0);
        const b = c.h(1);
        const intDiv = name === 'Div' && !isFloat(a.dtype) && !isFloat(b.dtype);
        return [hostBinary(a, b, intDiv ? (x, y) => Math.trunc(x / y) : num, big, bool ? 'bool' : undefined, `${c.node.label}: `)];
      }
      const [a, b] = pair(c);
      return [tfFn(a, b)];
    },
  };
}

/** Gradients of a broadcasting binary op, each summed back to its input's shape. */
function binaryGrad(g: GradCtx, da: () => string, db: () => string): (string | undefined)[] {
  const out = g.outShape(0);
  return [g.need(0) ? reduceTo(g.b, da(), out, g.inShape(0)) : undefined, g.need(1) ? reduceTo(g.b, db(), out, g.inShape(1)) : undefined];
}

// ---- interval rules of arithmetic -----------------------------------------------------------------
/** Add/Sub: bounds add (two input-dependent operands), or the constant shifts the centre. */
const ibpAddSub: IbpRule = (c) => {
  const op = c.node.opType;
  const [x0, x1] = c.node.inputs as [string, string];
  const out = c.node.outputs[0]!;
  if (c.dep[0] && c.dep[1]) {
    const [la, ua] = c.lu(x0);
    const [lb, ub] = c.lu(x1);
    c.set(out, op === 'Add' ? { l: c.b.op('Add', [la, lb]), u: c.b.op('Add', [ua, ub]) } : { l: c.b.op('Sub', [la, ub]), u: c.b.op('Sub', [ua, lb]) });
  } else if (c.dep[0]) {
    const [m, r] = c.cr(x0);
    c.set(out, { c: c.b.op(op, [m, x1]), r });
  } else {
    const [m, r] = c.cr(x1);
    c.set(out, { c: c.b.op(op, [x0, m]), r });
  }
};
/** Mul: the four corner products of two intervals, or centre·k and radius·|k| for a constant k. */
const ibpMul: IbpRule = (c) => {
  const [x0, x1] = c.node.inputs as [string, string];
  const out = c.node.outputs[0]!;
  if (c.dep[0] && c.dep[1]) {
    const [la, ua] = c.lu(x0);
    const [lb, ub] = c.lu(x1);
    const p = [c.b.op('Mul', [la, lb]), c.b.op('Mul', [la, ub]), c.b.op('Mul', [ua, lb]), c.b.op('Mul', [ua, ub])];
    c.set(out, { l: c.b.op('Min', p), u: c.b.op('Max', p) });
  } else {
    const [v, k] = c.dep[0] ? [x0, x1] : [x1, x0];
    const [m, r] = c.cr(v);
    c.set(out, { c: c.b.op('Mul', [m, k]), r: c.b.op('Mul', [r, c.abs(k)]) });
  }
};
const ibpDiv: IbpRule = (c) => {
  if (c.dep[1]) c.fail('division by a value that depends on the input');
  const [x0, x1] = c.node.inputs as [string, string];
  const [m, r] = c.cr(x0);
  c.set(c.node.outputs[0]!, { c: c.b.op('Div', [m, x1]), r: c.b.op('Div', [r, c.abs(x1)]) });
};
const ibpNeg: IbpRule = (c) => {
  const [l, u] = c.lu(c.node.inputs[0]!);
  c.set(c.node.outputs[0]!, { l: c.b.op('Neg', [u]), u: c.b.op('Neg', [l]) });
};
/** Monotone for a non-negative slope (alpha): the node applied to each bound. */
const ibpSlope: IbpRule = (c) => {
  if (c.a.float('alpha', 0.01) < 0) c.fail(`${c.node.opType} with negative alpha`);
  const [l, u] = c.lu(c.node.inputs[0]!);
  const lo = c.b.fresh('l');
  const hi = c.b.fresh('u');
  c.emit([l], [lo]);
  c.emit([u], [hi]);
  c.set(c.node.outputs[0]!, { l: lo, u: hi });
};
const bothDependent = (what: string) => (_n: unknown, dep: boolean[]): string | undefined => (dep[0] && dep[1] ? what : undefined);
const hasConstantOperand = (_n: unknown, dep: boolean[]): boolean => dep.some((d) => !d);

const PIECEWISE_CONSTANT: NoGradient = { none: 'boolean or piecewise-constant output' };
const STEP: NoGradient = { none: 'piecewise-constant output (zero gradient almost everywhere)' };

defineOp({
  type: 'Add', forward: binary('Add', tf.add, (x, y) => x + y, (x, y) => x + y),
  grad: (g) => binaryGrad(g, () => dy0(g), () => dy0(g)),
  bounds: { ibp: ibpAddSub, crown: { offset: hasConstantOperand } },
});
defineOp({
  type: 'Sub', forward: binary('Sub', tf.sub, (x, y) => x - y, (x, y) => x - y),
  grad: (g) => binaryGrad(g, () => dy0(g), () => g.b.op('Neg', [dy0(g)])),
  bounds: { ibp: ibpAddSub, crown: { offset: hasConstantOperand } },
});
defineOp({
  type: 'Mul', forward: binary('Mul', tf.mul, (x, y) => x * y, (x, y) => x * y),
  grad: (g) => binaryGrad(g, () => g.b.op('Mul', [dy0(g), g.x(1)]), () => g.b.op('Mul', [dy0(g), g.x(0)])),
  bounds: { ibp: ibpMul, crown: { unsupported: bothDependent('Mul of two values that depend on the input') } },
});
defineOp({
  type: 'Div',
  forward: binary('Div', (a, b) => (a.dtype === 'int32' ? tf.cast(tf.div(tf.cast(a, 'float32'), tf.cast(b, 'float32')), 'int32') : tf.div(a, b)),
    (x, y) => x / y, (x, y) => x / y),
  grad: (g) => binaryGrad(g, () => g.b.op('Div', [dy0(g), g.x(1)]), () => g.b.op('Neg', [g.b.op('Div', [g.b.op('Mul', [dy0(g), g.y(0)]), g.x(1)])])),
  bounds: { ibp: ibpDiv, crown: { unsupported: (_n, dep) => (dep[1] ? 'division by a value that depends on the input' : undefined) } },
});
defineOp({ type: 'Equal', forward: binary('Equal', tf.equal, (x, y) => x === y, (x, y) => x === y, true), grad: PIECEWISE_CONSTANT });
defineOp({ type: 'Less', forward: binary('Less', tf.less, (x, y) => x < y, (x, y) => x < y, true), grad: PIECEWISE_CONSTANT });
defineOp({ type: 'LessOrEqual', forward: binary('LessOrEqual', tf.lessEqual, (x, y) => x <= y, (x, y) => x <= y, true), grad: PIECEWISE_CONSTANT });
defineOp({ type: 'Greater', forward: binary('Greater', tf.greater, (x, y) => x > y, (x, y) => x > y, true), grad: PIECEWISE_CONSTANT });
defineOp({ type: 'GreaterOrEqual', forward: binary('GreaterOrEqual', tf.greaterEqual, (x, y) => x >= y, (x, y) => x >= y, true), grad: PIECEWISE_CONSTANT });
defineOp({ type: 'And', forward: binary('And', (a, b) => tf.logicalAnd(tf.cast(a, 'bool'), tf.cast(b, 'bool')), (x, y) => !!x && !!y, undefined, true), grad: PIECEWISE_CONSTANT });
defineOp({ type: 'Or', forward: binary('Or', (a, b) => tf.logicalOr(tf.cast(a, 'bool'), tf.cast(b, 'bool')), (x, y) => !!x || !!y, undefined, true), grad: PIECEWISE_CONSTANT });
defineOp({ type: 'Xor', forward: binary('Xor', (a, b) => tf.logicalXor(tf.cast(a, 'bool'), tf.cast(b, 'bool')), (x, y) => !!x !== !!y, undefined, true), grad: PIECEWISE_CONSTANT });

// Mod: fmod 0 takes the divisor's sign (Python's %, integers), fmod 1 the dividend's (C fmod)
defineOp({
  type: 'Mod',
  forward: {
    unsupported: (_n, opset) => (opset < 10 ? 'Mod before opset 10' : undefined),
    run(c) {
      const fmod = c.a.int('fmod', 0) === 1;
      if (c.allHost()) {
        const a = c.h(0);
        const b = c.h(1);
        const num = (x: number, y: number): number => {
          const r = x % y;
          return !fmod && r !== 0 && r < 0 !== y < 0 ? r + y : r;
        };
        const big = (x: bigint, y: bigint): bigint => {
          const r = x % y;
          return !fmod && r !== 0n && r < 0n !== y < 0n ? r + y : r;
        };
        return [hostBinary(a, b, num, big, undefined, `${c.node.label}: `)];
      }
      const [a, b] = pair(c);
      if (!fmod) return [tf.mod(a, b)];
      const af = a.dtype === 'float32' ? a : tf.cast(a, 'float32');
      const bf = b.dtype === 'float32' ? b : tf.cast(b, 'float32');
      const q = tf.div(af, bf);
      const r = tf.sub(af, tf.mul(bf, tf.mul(tf.sign(q), tf.floor(tf.abs(q)))));
      return [a.dtype === 'float32' ? r : tf.cast(r, a.dtype)];
    },
  },
  grad: (g) => {
    // a − b·q with q = floor(a/b) (fmod 0) or trunc(a/b) (fmod 1): ∂/∂a = 1, ∂/∂b = −q
    const q0 = g.b.op('Div', [g.x(0), g.x(1)]);
    const q = g.a.int('fmod', 0) ? g.b.op('Mul', [g.b.op('Sign', [q0]), g.b.op('Floor', [g.b.op('Abs', [q0])])]) : g.b.op('Floor', [q0]);
    return binaryGrad(g, () => dy0(g), () => g.b.op('Neg', [g.b.op('Mul', [dy0(g), q])]));
  },
});

defineOp({
  type: 'Pow',
  forward: {
    run(c) {
      if (c.allHost()) return [hostBinary(c.h(0), c.h(1), (x, y) => x ** y, undefined, c.h(0).dtype)];
      const base = c.t(0);
      const baseF = base.dtype === 'float32' ? base : tf.cast(base, 'float32');
      let out: tf.Tensor;
      const e = c.isHost(1) && c.h(1).data.length === 1 ? Number(c.h(1).data[0]) : undefined;
      // common constant exponents get exact, gradient-safe forms (pow's gradient takes log of the base)
      if (e === 2) out = tf.square(baseF);
      else if (e === 1) out = baseF;
      else if (e === 0.5) out = tf.sqrt(baseF);
      else if (e === 3) out = tf.mul(tf.square(baseF), baseF);
      else out = tf.pow(baseF, c.f(1));
      return [base.dtype === 'int32' ? tf.cast(out, 'int32') : out];
    },
  },
  grad: (g) => {
    // d/dx x^p = p·x^(p−1); the exponent is a constant in the models we differentiate
    const p = g.x(1);
    const da = g.b.op('Mul', [dy0(g), g.b.op('Mul', [p, g.b.op('Pow', [g.x(0), g.b.op('Sub', [p, g.b.scalarF(1)])])])]);
    return [g.need(0) ? reduceTo(g.b, da, g.outShape(0), g.inShape(0)) : undefined, undefined];
  },
});

function unary(tfFn: (x: tf.Tensor, c: OpCtx) => tf.Tensor, host?: (x: number) => number): ForwardRule {
  return {
    run(c) {
      if (host && c.isHost(0)) return [hostUnary(c.h(0), host)];
      const x = c.t(0);
      return [tfFn(x.dtype === 'int32' && !host ? tf.cast(x, 'float32') : x, c)];
    },
  };
}

const MONOTONE = { ibp: 'monotone' } as const;

defineOp({ type: 'Relu', forward: unary((x) => tf.relu(x), (x) => Math.max(x, 0)), grad: (g) => [g.b.op('Mul', [dy0(g), g.b.op('Cast', [g.b.op('Greater', [g.y(0), zero(g)])], { to: 1 })])], bounds: { ibp: 'monotone', crown: 'relu' } });
defineOp({
  type: 'Sigmoid', forward: unary((x) => tf.sigmoid(x), (x) => 1 / (1 + Math.exp(-x))),
  grad: (g) => {
    const y = g.y(0);
    return [g.b.op('Mul', [dy0(g), g.b.op('Mul', [y, g.b.op('Sub', [g.b.scalarF(1), y])])])];
  },
  bounds: MONOTONE,
});
defineOp({
  type: 'Tanh', forward: unary((x) => tf.tanh(x), Math.tanh),
  grad: (g) => {
    const y = g.y(0);
    return [g.b.op('Mul', [dy0(g), g.b.op('Sub', [g.b.scalarF(1), g.b.op('Mul', [y, y])])])];
  },
  bounds: MONOTONE,
});
defineOp({ type: 'Exp', forward: unary((x) => tf.exp(x), Math.exp), grad: (g) => [g.b.op('Mul', [dy0(g), g.y(0)])], bounds: MONOTONE });
defineOp({ type: 'Log', forward: unary((x) => tf.log(x), Math.log), grad: (g) => [g.b.op('Div', [dy0(g), g.x(0)])], bounds: MONOTONE });
defineOp({ type: 'Sqrt', forward: unary((x) => tf.sqrt(x), Math.sqrt), grad: (g) => [g.b.op('Div', [dy0(g), g.b.op('Mul', [g.y(0), g.b.scalarF(2)])])], bounds: MONOTONE });
defineOp({ type: 'Abs', forward: unary((x) => tf.abs(x), Math.abs), grad: (g) => [g.b.op('Mul', [dy0(g), g.b.op('Sign', [g.x(0)])])] });
defineOp({ type: 'Neg', forward: unary((x) => tf.neg(x), (x) => -x), grad: (g) => [g.b.op('Neg', [dy0(g)])], bounds: { ibp: ibpNeg, crown: {} } });
defineOp({ type: 'Reciprocal', forward: unary((x) => tf.reciprocal(x), (x) => 1 / x), grad: (g) => [g.b.op('Neg', [g.b.op('Mul', [dy0(g), g.b.op('Mul', [g.y(0), g.y(0)])])])] });
defineOp({ type: 'Floor', forward: unary((x) => tf.floor(x), Math.floor), grad: STEP });
defineOp({ type: 'Ceil', forward: unary((x) => tf.ceil(x), Math.ceil), grad: STEP });
defineOp({ type: 'Round', forward: unary((x) => tf.round(x)), grad: STEP }); // half to even, as ONNX
defineOp({ type: 'Sign', forward: unary((x) => tf.sign(x), Math.sign), grad: PIECEWISE_CONSTANT });
defineOp({
  type: 'Erf', forward: unary((x) => tf.erf(x)),
  grad: (g) => {
    const x = g.x(0);
    const e = g.b.op('Exp', [g.b.op('Neg', [g.b.op('Mul', [x, x])])]);
    return [g.b.op('Mul', [dy0(g), g.b.op('Mul', [e, g.b.scalarF(2 / Math.sqrt(Math.PI))])])];
  },
  bounds: MONOTONE,
});
defineOp({ type: 'Sin', forward: unary((x) => tf.sin(x), Math.sin), grad: (g) => [g.b.op('Mul', [dy0(g), g.b.op('Cos', [g.x(0)])])] });
defineOp({ type: 'Cos', forward: unary((x) => tf.cos(x), Math.cos), grad: (g) => [g.b.op('Neg', [g.b.op('Mul', [dy0(g), g.b.op('Sin', [g.x(0)])])])] });
defineOp({ type: 'Softplus', forward: unary((x) => tf.softplus(x)), grad: (g) => [g.b.op('Mul', [dy0(g), g.b.op('Sigmoid', [g.x(0)])])], bounds: MONOTONE });
defineOp({
  type: 'Softsign', forward: unary((x) => tf.div(x, tf.add(tf.abs(x), 1))),
  grad: (g) => {
    const d = g.b.op('Add', [g.b.scalarF(1), g.b.op('Abs', [g.x(0)])]);
    return [g.b.op('Div', [dy0(g), g.b.op('Mul', [d, d])])];
  },
});
defineOp({
  type: 'LeakyRelu', forward: unary((x, c) => tf.leakyRelu(x, c.a.float('alpha', 0.01))),
  grad: (g) => {
    const alpha = g.a.float('alpha', 0.01);
    return [g.b.op('Where', [g.b.op('Greater', [g.x(0), zero(g)]), dy0(g), g.b.op('Mul', [dy0(g), g.b.scalarF(alpha)])])];
  },
  bounds: { ibp: ibpSlope },
});
defineOp({
  type: 'ThresholdedRelu', forward: unary((x, c) => tf.mul(x, tf.cast(tf.greater(x, c.a.float('alpha', 1)), 'float32'))),
  grad: (g) => {
    const alpha = g.a.float('alpha', 1);
    return [g.b.op('Where', [g.b.op('Greater', [g.x(0), g.b.scalarF(alpha)]), dy0(g), zero(g)])];
  },
});

/** exp(x) - 1 on the negative side only; exp never sees large positive values, so gradients stay finite. */
function expm1Neg(x: tf.Tensor): tf.Tensor {
  return tf.sub(tf.exp(tf.minimum(x, 0)), 1);
}
defineOp({
  type: 'Elu',
  forward: unary((x, c) => {
    const alpha = c.a.float('alpha', 1);
    return tf.where(tf.greater(x, 0), x, tf.mul(expm1Neg(x), alpha));
  }),
  grad: (g) => {
    const alpha = g.a.float('alpha', 1);
    const neg = g.b.op('Mul', [dy0(g), g.b.op('Add', [g.y(0), g.b.scalarF(alpha)])]);
    return [g.b.op('Where', [g.b.op('Greater', [g.x(0), zero(g)]), dy0(g), neg])];
  },
  bounds: MONOTONE,
});
defineOp({
  type: 'Selu',
  forward: unary((x, c) => {
    const alpha = c.a.float('alpha', 1.67326319217681884765625);
    const gamma = c.a.float('gamma', 1.05070102214813232421875);
    return tf.mul(tf.where(tf.greater(x, 0), x, tf.mul(expm1Neg(x), alpha)), gamma);
  }),
  grad: (g) => {
    const alpha = g.a.float('alpha', 1.67326319217681884765625);
    const gamma = g.a.float('gamma', 1.05070102214813232421875);
    // x > 0: γ; x ≤ 0: y + γα (y = γα(eˣ − 1))
    const neg = g.b.op('Add', [g.y(0), g.b.scalarF(gamma * alpha)]);
    return [g.b.op('Mul', [dy0(g), g.b.op('Where', [g.b.op('Greater', [g.x(0), zero(g)]), g.b.scalarF(gamma), neg])])];
  },
  bounds: MONOTONE,
});
defineOp({
  type: 'Celu',
  forward: unary((x, c) => {
    const alpha = c.a.float('alpha', 1);
    return tf.add(tf.relu(x), tf.minimum(0, tf.mul(expm1Neg(tf.div(x, alpha)), alpha)));
  }),
  grad: (g) => {
    const alpha = g.a.float('alpha', 1);
    // x > 0: 1; x ≤ 0: exp(x/α)
    const neg = g.b.op('Exp', [g.b.op('Div', [g.x(0), g.b.scalarF(alpha)])]);
    return [g.b.op('Mul', [dy0(g), g.b.op('Where', [g.b.op('Greater', [g.x(0), zero(g)]), g.b.scalarF(1), neg])])];
  },
  bounds: MONOTONE,
});
defineOp({
  type: 'HardSigmoid',
  forward: unary((x, c) => tf.clipByValue(tf.add(tf.mul(x, c.a.float('alpha', 0.2)), c.a.float('beta', 0.5)), 0, 1)),
  grad: (g) => {
    const alpha = g.a.float('alpha', 0.2);
    const beta = g.a.float('beta', 0.5);
    const t = g.b.op('Add', [g.b.op('Mul', [g.x(0), g.b.scalarF(alpha)]), g.b.scalarF(beta)]);
    const inside = g.b.op('And', [g.b.op('Greater', [t, zero(g)]), g.b.op('Less', [t, g.b.scalarF(1)])]);
    return [g.b.op('Where', [inside, g.b.op('Mul', [dy0(g), g.b.scalarF(alpha)]), zero(g)])];
  },
  bounds: { ibp: ibpSlope },
});
defineOp({
  type: 'HardSwish',
  forward: unary((x) => tf.mul(x, tf.clipByValue(tf.add(tf.div(x, 6), 0.5), 0, 1))),
  grad: (g) => {
    // y = x·clip(x/6 + ½, 0, 1): 0 below −3, 1 above 3, x/3 + ½ between (PyTorch's hardswish_backward)
    const x = g.x(0);
    const mid = g.b.op('Add', [g.b.op('Div', [x, g.b.scalarF(3)]), g.b.scalarF(0.5)]);
    const slope = g.b.op('Where', [g.b.op('Less', [x, g.b.scalarF(-3)]), zero(g), g.b.op('Where', [g.b.op('Greater', [x, g.b.scalarF(3)]), g.b.scalarF(1), mid])]);
    return [g.b.op('Mul', [dy0(g), slope])];
  },
});

defineOp({
  type: 'PRelu',
  forward: {
    run(c) {
      const x = c.f(0);
      const slope = c.f(1);
      return [tf.add(tf.relu(x), tf.mul(slope, tf.minimum(x, 0)))];
    },
  },
  grad: (g) => {
    const pos = g.b.op('Greater', [g.x(0), zero(g)]);
    const dx = g.need(0) ? g.b.op('Where', [pos, dy0(g), g.b.op('Mul', [dy0(g), g.x(1)])]) : undefined;
    const ds = g.need(1) ? reduceTo(g.b, g.b.op('Mul', [dy0(g), g.b.op('Min', [g.x(0), zero(g)])]), g.outShape(0), g.inShape(1)) : undefined;
    return [dx, ds];
  },
  params: { slots: [[1, 'slope', false]] },
});

defineOp({
  type: 'Clip',
  forward: {
    run(c) {
      let lo: number | tf.Tensor | undefined;
      let hi: number | tf.Tensor | undefined;
      if (c.opset < 11) {
        lo = c.a.float('min');
        hi = c.a.float('max');
      } else {
        if (c.has(1)) lo = c.isHost(1) ? c.scalar(1) : c.t(1);
        if (c.has(2)) hi = c.isHost(2) ? c.scalar(2) : c.t(2);
      }
      if (c.isHost(0) && typeof lo !== 'object' && typeof hi !== 'object') {
        return [hostUnary(c.h(0), (v) => Math.min(Math.max(v, lo ?? -Infinity), hi ?? Infinity))];
      }
      let x = c.t(0);
      const cast = (v: number | tf.Tensor): number | tf.Tensor => (typeof v === 'number' || v.dtype === x.dtype ? v : tf.cast(v, x.dtype));
      if (lo !== undefined) x = tf.maximum(x, cast(lo));
      if (hi !== undefined) x = tf.minimum(x, cast(hi));
      return [x];
    },
  },
  grad: (g) => {
    // gradient passes where min ≤ x ≤ max (as PyTorch's clamp), i.e. where the output is x itself: a mask from
    // one comparison, multiplied in (a Where with its broadcast zero ran 2-3x slower: 8.6 ms on [128,96,16,16])
    if (!g.has(1) && !g.has(2)) return [dy0(g)];
    return [g.b.op('Mul', [dy0(g), g.b.op('Cast', [g.b.op('Equal', [g.y(0), g.x(0)])], { to: 1 })])];
  },
  bounds: { ibp: 'monotone', dataInput0: true },
});

defineOp({
  type: 'Not',
  forward: {
    run(c) {
      if (c.isHost(0)) return [hostUnary(c.h(0), (v) => (v ? 0 : 1), 'bool')];
      return [tf.logicalNot(tf.cast(c.t(0), 'bool'))];
    },
  },
  grad: PIECEWISE_CONSTANT,
});

defineOp({
  type: 'Where',
  forward: {
    run(c) {
      if (c.allHost()) return [whereHost(c.h(0), c.h(1), c.h(2), c.node.label)];
      const cond = tf.cast(c.t(0), 'bool');
      const [a, b] = pair(c, 1, 2);
      return [tf.where(cond, a, b)];
    },
  },
  grad: (g) => {
    const out = g.outShape(0);
    const dy = dy0(g);
    const cond = g.x(0);
    return [
      undefined,
      g.need(1) ? reduceTo(g.b, g.b.op('Where', [cond, dy, zero(g)]), out, g.inShape(1)) : undefined,
      g.need(2) ? reduceTo(g.b, g.b.op('Where', [cond, zero(g), dy]), out, g.inShape(2)) : undefined,
    ];
  },
});

function whereHost(cond: HostTensor, a: HostTensor, b: HostTensor, where: string): HostTensor {
  const shape = broadcastShapes(broadcastShapes(cond.shape, a.shape, `${where}: `), b.shape, `${where}: `);
  const [ic, ia, ib] = [cond, a, b].map((t) => broadcastIndex(t.shape, shape)) as [Int32Array, Int32Array, Int32Array];
  const out = allocate(a.dtype, ic.length) as unknown as unknown[];
  const [dc, da, db] = [cond.data, a.data, b.data] as unknown as unknown[][];
  for (let k = 0; k < ic.length; k++) out[k] = dc[ic[k]!] ? da[ia[k]!] : db[ib[k]!];
  return { dtype: a.dtype, shape, data: out as never };
}

// Variadic ops: Sum, Mean, Max, Min with broadcasting.
function variadic(tfFn: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, num: NumFn, big?: BigFn, mean = false): ForwardRule {
  return {
    run(c) {
      const n = c.n;
      if (c.allHost() && !mean) {
        let acc = c.h(0);
        for (let i = 1; i < n; i++) acc = hostBinary(acc, c.h(i), num, big);
        return [acc];
      }
      let acc: tf.Tensor = c.t(0);
      for (let i = 1; i < n; i++) {
        let b = c.t(i);
        if (b.dtype !== acc.dtype) {
          acc = tf.cast(acc, 'float32');
          b = tf.cast(b, 'float32');
        }
        acc = tfFn(acc, b);
      }
      return [mean ? tf.div(acc, n) : acc];
    },
  };
}
const sumGrad: GradRule = (g) => {
    const n = g.node.inputs.length;
    const d = g.node.opType === 'Mean' ? g.b.op('Div', [dy0(g), g.b.scalarF(n)]) : dy0(g);
    return g.node.inputs.map((_, i) => (g.need(i) ? reduceTo(g.b, d, g.outShape(0), g.inShape(i)) : undefined));
  };
// the gradient goes to the first input equal to the result (on ties, as the pairwise maximum/minimum that
// the converter computes: tfjs passes it to the left operand)
const extremumGrad: GradRule = (g) => {
    // the gradient goes to the first input equal to the result (on ties, as the pairwise maximum/minimum that
    // the converter computes: tfjs passes it to the left operand)
    const out = g.outShape(0);
    let taken: string | undefined;
    return g.node.inputs.map((_, i) => {
      const eq = g.b.op('Equal', [g.x(i), g.y(0)]);
      const mine = taken ? g.b.op('And', [eq, g.b.op('Not', [taken])]) : eq;
      taken = taken ? g.b.op('Or', [taken, eq]) : eq;
      return g.need(i) ? reduceTo(g.b, g.b.op('Where', [mine, dy0(g), zero(g)]), out, g.inShape(i)) : undefined;
    });
  };
defineOp({ type: 'Sum', forward: variadic(tf.add, (x, y) => x + y, (x, y) => x + y), grad: sumGrad });
defineOp({ type: 'Mean', forward: variadic(tf.add, (x, y) => x + y, undefined, true), grad: sumGrad });
defineOp({ type: 'Max', forward: variadic(tf.maximum, Math.max, (x, y) => (x > y ? x : y)), grad: extremumGrad, bounds: MONOTONE });
defineOp({ type: 'Min', forward: variadic(tf.minimum, Math.min, (x, y) => (x < y ? x : y)), grad: extremumGrad, bounds: MONOTONE });
