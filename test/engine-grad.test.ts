// Gradient checks of the compiled engine (onnx-hydra's own backward rules run by onnxruntime) against the
// tfjs `cpu` backend's autodiff, over strides, pads, dilations, groups and the other attributes that
// change a kernel's backward pass. Relative error: max |ours − tfjs| / max |tfjs| ≤ 1e-4.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tf } from '../src/engine/tf.js';
import { selectEngine } from '../src/engine/select.js';
import { loadModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { Net } from '../src/engine/net.js';
import { makeRng } from '../src/util/rng.js';
import { buildModel, encode, floatInit, node } from './helpers/build-model.js';

const engine = selectEngine('ort');
const reference = { ...engine, kind: 'cpu' as const, description: 'tfjs cpu' };
const rng = makeRng('grad-check');
const rand = (n: number, s = 1): number[] => Array.from({ length: n }, () => (2 * rng() - 1) * s);
const numel = (s: number[]): number => s.reduce((a, b) => a * b, 1);

interface Case {
  name: string;
  x: number[];
  /** nodes from 'x' to 'y'; weights named w*, b* */
  nodes: ReturnType<typeof node>[];
  weights: Record<string, number[]>;
  training?: boolean;
}

function conv(name: string, x: number[], w: number[], attrs: Record<string, number | number[] | string>, bias = true, op = 'Conv'): Case {
  const cout = op === 'Conv' ? w[0]! : w[1]! * (Number(attrs.group ?? 1));
  return { name, x, nodes: [node(op, ['x', 'w', ...(bias ? ['b'] : [])], ['y'], attrs)], weights: { w, ...(bias ? { b: [cout] } : {}) } };
}

const CASES: Case[] = [
  conv('Conv 3x3 stride 1 pad 1', [2, 3, 8, 8], [4, 3, 3, 3], { pads: [1, 1, 1, 1] }),
  conv('Conv 3x3 stride 2 no pad', [2, 3, 9, 9], [4, 3, 3, 3], { strides: [2, 2] }),
  conv('Conv 4x4 stride 2 pad 1, 8 channels (sub-pixel input gradient)', [2, 8, 10, 10], [4, 8, 4, 4], { strides: [2, 2], pads: [1, 1, 1, 1] }),
  conv('Conv 3x3 stride 2 pad 1 odd size, 8 channels', [2, 8, 9, 9], [3, 8, 3, 3], { strides: [2, 2], pads: [1, 1, 1, 1] }),
  conv('Conv 5x5 stride 3 SAME_UPPER, 8 channels', [2, 8, 11, 11], [3, 8, 5, 5], { strides: [3, 3], auto_pad: 'SAME_UPPER' }),
  conv('Conv 3x3 stride 2x1 asymmetric pads', [2, 2, 8, 7], [3, 2, 3, 3], { strides: [2, 1], pads: [0, 1, 1, 0] }, false),
  conv('Conv 3x3 dilation 2 pad 2', [2, 2, 9, 9], [3, 2, 3, 3], { dilations: [2, 2], pads: [2, 2, 2, 2] }),
  conv('Conv 3x3 stride 2 dilation 2', [2, 2, 11, 11], [3, 2, 3, 3], { strides: [2, 2], dilations: [2, 2] }),
  conv('Conv group 2', [2, 4, 7, 7], [6, 2, 3, 3], { group: 2, pads: [1, 1, 1, 1] }),
  conv('Conv depthwise stride 2', [2, 4, 8, 8], [4, 1, 3, 3], { group: 4, strides: [2, 2], pads: [1, 1, 1, 1] }),
  conv('Conv auto_pad SAME_UPPER stride 2', [2, 2, 7, 7], [3, 2, 3, 3], { auto_pad: 'SAME_UPPER', strides: [2, 2] }),
  conv('Conv auto_pad SAME_LOWER', [2, 2, 6, 6], [3, 2, 4, 4], { auto_pad: 'SAME_LOWER' }),
  conv('Conv 5x5 stride 3', [2, 1, 14, 14], [2, 1, 5, 5], { strides: [3, 3], pads: [1, 1, 1, 1] }),
  conv('Conv 1x1', [2, 5, 4, 4], [3, 5, 1, 1], {}),
  conv('Conv 1-D stride 2', [2, 3, 12], [4, 3, 3], { strides: [2], pads: [1, 1] }),
  conv('ConvTranspose stride 2 pad 1 output_padding 1', [2, 3, 5, 5], [3, 2, 3, 3], { strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] }, true, 'ConvTranspose'),
  conv('ConvTranspose stride 2 output_padding 1 beyond the full size', [2, 3, 4, 4], [3, 2, 1, 1], { strides: [2, 2], output_padding: [1, 1] }, true, 'ConvTranspose'),
  conv('ConvTranspose group 2', [2, 4, 4, 4], [4, 1, 3, 3], { group: 2 }, true, 'ConvTranspose'),
  {
    name: 'MaxPool 3x3 stride 2 pad 1 (+Relu)', x: [2, 3, 9, 9],
    nodes: [node('Conv', ['x', 'w'], ['c'], { pads: [1, 1, 1, 1] }), node('Relu', ['c'], ['r']), node('MaxPool', ['r'], ['y'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] })],
    weights: { w: [3, 3, 3, 3] },
  },
  {
    name: 'MaxPool ceil_mode', x: [2, 2, 8, 8],
    nodes: [node('Conv', ['x', 'w'], ['c']), node('MaxPool', ['c'], ['y'], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 })],
    weights: { w: [2, 2, 1, 1] },
  },
  {
    name: 'AveragePool count_include_pad 0 and 1', x: [2, 2, 7, 7],
    nodes: [
      node('Conv', ['x', 'w'], ['c']),
      node('AveragePool', ['c'], ['p0'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }),
      node('AveragePool', ['c'], ['p1'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 }),
      node('Add', ['p0', 'p1'], ['y']),
    ],
    weights: { w: [2, 2, 1, 1] },
  },
  {
    name: 'GlobalAveragePool, Flatten, Gemm transB alpha beta', x: [3, 2, 5, 5],
    nodes: [node('Conv', ['x', 'w'], ['c']), node('GlobalAveragePool', ['c'], ['g']), node('Flatten', ['g'], ['f']), node('Gemm', ['f', 'w2', 'b2'], ['y'], { transB: 1, alpha: 0.5, beta: 1.5 })],
    weights: { w: [4, 2, 3, 3], w2: [6, 4], b2: [6] },
  },
  {
    name: 'Gemm transA (weight first) and MatMul', x: [3, 5],
    nodes: [node('Gemm', ['w', 'x'], ['t'], { transA: 1, transB: 1 }), node('Transpose', ['t'], ['tt'], { perm: [1, 0] }), node('MatMul', ['tt', 'w2'], ['y'])],
    weights: { w: [5, 4], w2: [4, 3] },
  },
  {
    name: 'BatchNormalization training mode, LeakyRelu, residual Add', x: [4, 3, 6, 6], training: true,
    nodes: [
      node('Conv', ['x', 'w', 'b'], ['c'], { pads: [1, 1, 1, 1] }),
      node('BatchNormalization', ['c', 's', 'bb', 'rm', 'rv'], ['n'], { epsilon: 1e-5, momentum: 0.9 }),
      node('LeakyRelu', ['n'], ['l'], { alpha: 0.1 }),
      node('Add', ['l', 'c'], ['y']),
    ],
    weights: { w: [3, 3, 3, 3], b: [3], s: [3], bb: [3], rm: [3], rv: [3] },
  },
];

for (const c of CASES) {
  test(`gradient check: ${c.name}`, () => {
    const inits = Object.entries(c.weights).map(([k, s]) => floatInit(k, s, k === 'rv' ? rand(numel(s)).map((v) => 1 + Math.abs(v)) : rand(numel(s), 0.5)));
    const model = buildModel({
      inputs: [{ name: 'x', shape: c.x }], outputs: [{ name: 'y', shape: [] }], nodes: c.nodes, initializers: inits, opset: 13,
    });
    const g = TfGraph.fromModel(loadModel(encode(model)));
    const ours = new Net(g, engine);
    const ref = new Net(g, reference);
    const x = tf.tensor(rand(numel(c.x)).map((v) => (v + 1) / 2), c.x);
    const vars = g.trainableNames().map((k) => g.variables.get(k)!);
    assert.ok(vars.length > 0);
    const grads = (net: Net) => {
      let out: tf.Tensor | undefined;
      const f = (xx: tf.Tensor): tf.Scalar => {
        const z = net.logits(xx, { training: !!c.training, gradX: true, gradParams: true }).logits;
        out ??= tf.keep(z);
        const r = tf.tensor(Array.from({ length: z.size }, (_, i) => Math.sin(i + 1)), z.shape);
        return tf.sum(tf.mul(z, r)) as tf.Scalar;
      };
      const { value, grads: gp } = tf.variableGrads(() => f(x), vars);
      void value;
      const gx = tf.grad(f)(x);
      return { out: out!, gx, gp };
    };
    const a = grads(ours);
    const b = grads(ref);
    const rel = (p: tf.Tensor, q: tf.Tensor, what: string): void => {
      assert.deepEqual(p.shape, q.shape, what);
      const pd = p.dataSync();
      const qd = q.dataSync();
      let num = 0;
      let den = 0;
      for (let i = 0; i < qd.length; i++) {
        num = Math.max(num, Math.abs(pd[i]! - qd[i]!));
        den = Math.max(den, Math.abs(qd[i]!));
      }
      assert.ok(den > 0, `${what}: reference gradient is zero`);
      assert.ok(num / den <= 1e-4, `${what}: relative error ${(num / den).toExponential(2)}`);
    };
    rel(a.out, b.out, 'output');
    rel(a.gx, b.gx, 'd/dx');
    for (const k of Object.keys(b.gp)) rel(a.gp[k]!, b.gp[k]!, `d/d${k}`);
    ours.dispose();
    ref.dispose();
    g.dispose();
  });
}
