// Elementwise and activation operators (numpy broadcasting, as ONNX defines it).
import { tf } from '../../tfjs/tf.js';
import { allocate, isFloat, type HostTensor } from '../../onnx/tensor.js';
import { broadcastIndex, broadcastShapes, hostBinary, hostUnary } from '../host.js';
import type { OpCtx } from '../values.js';
import { defineOp } from './registry.js';

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

function binary(name: string, tfFn: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, num: NumFn, big?: BigFn, bool = false): void {
  defineOp(name, {
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
  });
}

binary('Add', tf.add, (x, y) => x + y, (x, y) => x + y);
binary('Sub', tf.sub, (x, y) => x - y, (x, y) => x - y);
binary('Mul', tf.mul, (x, y) => x * y, (x, y) => x * y);
binary('Div', (a, b) => (a.dtype === 'int32' ? tf.cast(tf.div(tf.cast(a, 'float32'), tf.cast(b, 'float32')), 'int32') : tf.div(a, b)),
  (x, y) => x / y, (x, y) => x / y);
binary('Equal', tf.equal, (x, y) => x === y, (x, y) => x === y, true);
binary('Less', tf.less, (x, y) => x < y, (x, y) => x < y, true);
binary('LessOrEqual', tf.lessEqual, (x, y) => x <= y, (x, y) => x <= y, true);
binary('Greater', tf.greater, (x, y) => x > y, (x, y) => x > y, true);
binary('GreaterOrEqual', tf.greaterEqual, (x, y) => x >= y, (x, y) => x >= y, true);
binary('And', (a, b) => tf.logicalAnd(tf.cast(a, 'bool'), tf.cast(b, 'bool')), (x, y) => !!x && !!y, undefined, true);
binary('Or', (a, b) => tf.logicalOr(tf.cast(a, 'bool'), tf.cast(b, 'bool')), (x, y) => !!x || !!y, undefined, true);
binary('Xor', (a, b) => tf.logicalXor(tf.cast(a, 'bool'), tf.cast(b, 'bool')), (x, y) => !!x !== !!y, undefined, true);

// Mod: fmod 0 takes the divisor's sign (Python's %, integers), fmod 1 the dividend's (C fmod)
defineOp('Mod', {
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
});

defineOp('Pow', {
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
});

function unary(name: string, tfFn: (x: tf.Tensor, c: OpCtx) => tf.Tensor, host?: (x: number) => number): void {
  defineOp(name, {
    run(c) {
      if (host && c.isHost(0)) return [hostUnary(c.h(0), host)];
      const x = c.t(0);
      return [tfFn(x.dtype === 'int32' && !host ? tf.cast(x, 'float32') : x, c)];
    },
  });
}

unary('Relu', (x) => tf.relu(x), (x) => Math.max(x, 0));
unary('Sigmoid', (x) => tf.sigmoid(x), (x) => 1 / (1 + Math.exp(-x)));
unary('Tanh', (x) => tf.tanh(x), Math.tanh);
unary('Exp', (x) => tf.exp(x), Math.exp);
unary('Log', (x) => tf.log(x), Math.log);
unary('Sqrt', (x) => tf.sqrt(x), Math.sqrt);
unary('Abs', (x) => tf.abs(x), Math.abs);
unary('Neg', (x) => tf.neg(x), (x) => -x);
unary('Reciprocal', (x) => tf.reciprocal(x), (x) => 1 / x);
unary('Floor', (x) => tf.floor(x), Math.floor);
unary('Ceil', (x) => tf.ceil(x), Math.ceil);
unary('Round', (x) => tf.round(x)); // half to even, as ONNX
unary('Sign', (x) => tf.sign(x), Math.sign);
unary('Erf', (x) => tf.erf(x));
unary('Sin', (x) => tf.sin(x), Math.sin);
unary('Cos', (x) => tf.cos(x), Math.cos);
unary('Softplus', (x) => tf.softplus(x));
unary('Softsign', (x) => tf.div(x, tf.add(tf.abs(x), 1)));
unary('LeakyRelu', (x, c) => tf.leakyRelu(x, c.a.float('alpha', 0.01)));
unary('ThresholdedRelu', (x, c) => tf.mul(x, tf.cast(tf.greater(x, c.a.float('alpha', 1)), 'float32')));

/** exp(x) - 1 on the negative side only; exp never sees large positive values, so gradients stay finite. */
function expm1Neg(x: tf.Tensor): tf.Tensor {
  return tf.sub(tf.exp(tf.minimum(x, 0)), 1);
}
unary('Elu', (x, c) => {
  const alpha = c.a.float('alpha', 1);
  return tf.where(tf.greater(x, 0), x, tf.mul(expm1Neg(x), alpha));
});
unary('Selu', (x, c) => {
  const alpha = c.a.float('alpha', 1.67326319217681884765625);
  const gamma = c.a.float('gamma', 1.05070102214813232421875);
  return tf.mul(tf.where(tf.greater(x, 0), x, tf.mul(expm1Neg(x), alpha)), gamma);
});
unary('Celu', (x, c) => {
  const alpha = c.a.float('alpha', 1);
  return tf.add(tf.relu(x), tf.minimum(0, tf.mul(expm1Neg(tf.div(x, alpha)), alpha)));
});
unary('HardSigmoid', (x, c) => tf.clipByValue(tf.add(tf.mul(x, c.a.float('alpha', 0.2)), c.a.float('beta', 0.5)), 0, 1));
unary('HardSwish', (x) => tf.mul(x, tf.clipByValue(tf.add(tf.div(x, 6), 0.5), 0, 1)));

defineOp('PRelu', {
  run(c) {
    const x = c.f(0);
    const slope = c.f(1);
    return [tf.add(tf.relu(x), tf.mul(slope, tf.minimum(x, 0)))];
  },
});

defineOp('Clip', {
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
});

defineOp('Not', {
  run(c) {
    if (c.isHost(0)) return [hostUnary(c.h(0), (v) => (v ? 0 : 1), 'bool')];
    return [tf.logicalNot(tf.cast(c.t(0), 'bool'))];
  },
});

defineOp('Where', {
  run(c) {
    if (c.allHost()) return [whereHost(c.h(0), c.h(1), c.h(2), c.node.label)];
    const cond = tf.cast(c.t(0), 'bool');
    const [a, b] = pair(c, 1, 2);
    return [tf.where(cond, a, b)];
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
function variadic(name: string, tfFn: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, num: NumFn, big?: BigFn, mean = false): void {
  defineOp(name, {
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
  });
}
variadic('Sum', tf.add, (x, y) => x + y, (x, y) => x + y);
variadic('Mean', tf.add, (x, y) => x + y, undefined, true);
variadic('Max', tf.maximum, Math.max, (x, y) => (x > y ? x : y));
variadic('Min', tf.minimum, Math.min, (x, y) => (x < y ? x : y));

