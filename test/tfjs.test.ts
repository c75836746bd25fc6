// The cpu backend's Add/Sub/Multiply fast paths (src/tfjs/cpu-fast.ts) against element-by-element broadcasting.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tf } from '../src/tfjs/tf.js';
import { makeRng } from '../src/util/rng.js';
import { fastCpuKernels } from '../src/tfjs/cpu-fast.js';

const rng = makeRng('cpu-fast');
const numel = (s: number[]): number => s.reduce((p, d) => p * d, 1);

/** op(a, b) by numpy broadcasting rules, one element at a time */
function reference(op: (x: number, y: number) => number, a: Float32Array, as: number[], b: Float32Array, bs: number[]): { data: Float32Array; shape: number[] } {
  const r = Math.max(as.length, bs.length);
  const pa = [...new Array(r - as.length).fill(1), ...as];
  const pb = [...new Array(r - bs.length).fill(1), ...bs];
  const shape = pa.map((d, i) => Math.max(d, pb[i]!));
  const out = new Float32Array(numel(shape));
  const idx = new Array(r).fill(0);
  const flat = (s: number[]): number => s.reduce((p, d, i) => p * d + (d === 1 ? 0 : idx[i]!), 0);
  for (let o = 0; o < out.length; o++) {
    let rem = o;
    for (let i = r - 1; i >= 0; i--) {
      idx[i] = rem % shape[i]!;
      rem = Math.floor(rem / shape[i]!);
    }
    out[o] = op(a[flat(pa)]!, b[flat(pb)]!);
  }
  return { data: out, shape };
}

test('cpu backend Add/Sub/Mul: same shapes, scalars, rows, columns and the stock path agree with element-wise broadcasting', async () => {
  await tf.setBackend('cpu');
  // the loops replace tfjs's kernels by name: a wrong name (as 'Mul' for tfjs's 'Multiply' once was) would
  // leave the stock kernel in place, and every result below would still agree
  assert.deepEqual([...fastCpuKernels()].sort(), ['Add', 'Multiply', 'Sub']);
  const pairs: [number[], number[]][] = [
    [[3, 4, 5], [3, 4, 5]], [[6000], [6000]], [[2, 3], []], [[], [2, 3]], [[4, 10], [4, 1]], [[4, 1], [4, 10]],
    [[4, 10], [10]], [[10], [4, 10]], [[2, 3, 4, 5], [1, 3, 1, 1]], [[2, 3, 4], [1, 1, 4]], [[2, 3, 4], [2, 3, 1]],
    [[2, 1, 4], [1, 3, 1]], [[3, 1], [1, 4]],
  ];
  const ops: [string, (x: number, y: number) => number, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor][] = [
    ['add', (x, y) => Math.fround(x + y), tf.add], ['sub', (x, y) => Math.fround(x - y), tf.sub], ['mul', (x, y) => Math.fround(x * y), tf.mul],
  ];
  for (const [as, bs] of pairs) {
    const a = Float32Array.from({ length: numel(as) }, () => rng() * 4 - 2);
    const b = Float32Array.from({ length: numel(bs) }, () => rng() * 4 - 2);
    for (const [name, op, fn] of ops) {
      const want = reference(op, a, as, b, bs);
      const got = tf.tidy(() => fn(tf.tensor(a, as), tf.tensor(b, bs)));
      assert.deepEqual(got.shape, want.shape, `${name} [${as}] [${bs}]`);
      assert.deepEqual(Array.from(got.dataSync()), Array.from(want.data), `${name} [${as}] [${bs}]`);
      got.dispose();
    }
  }
  // int32 goes to the stock kernel
  assert.deepEqual(Array.from(tf.add(tf.tensor([1, 2], [2], 'int32'), tf.tensor([3], [1], 'int32')).dataSync()), [4, 5]);
});
