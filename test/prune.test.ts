// Pruning: exact top-k masks, the straight-through estimator, fine-tuning that never revives a weight,
// exported sparsity equal to the mask, and one-line errors for bad input.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { tf } from '../src/tfjs/tf.js';
import { selectEngine } from '../src/engine/select.js';
import { loadModel, saveModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { Net } from '../src/engine/net.js';
import { loadData, slice } from '../src/data/index.js';
import { DEFAULT_OBJECTIVE, makeObjective } from '../src/train/objectives.js';
import type { TrainConfig } from '../src/train/trainer.js';
import { computeMasks, keepCount, maskedWeightSTE, topKMask } from '../src/prune/masks.js';
import { pruneNet } from '../src/prune/prune.js';
import { makeRng } from '../src/util/rng.js';

const engine = selectEngine('ort');
const data = loadData('fashion-mnist');
const small = { train: slice(data.train, 0, 512), test: slice(data.test, 0, 128) };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-prune-'));

test('top-k keeps exactly ⌈k·n⌉ weights per layer, the largest |score|, ties included exactly', () => {
  const rng = makeRng('topk');
  for (const n of [1, 7, 100, 1001]) {
    for (const sp of [0.1, 0.5, 0.9, 0.99]) {
      const s = Float32Array.from({ length: n }, () => 2 * rng() - 1);
      const m = topKMask(s, keepCount(n, sp));
      const kept = m.reduce((a, b) => a + b, 0);
      assert.equal(kept, Math.max(1, Math.ceil((1 - sp) * n - 1e-9)), `n ${n} sparsity ${sp}`);
      let minKept = Infinity;
      let maxDropped = -Infinity;
      for (let i = 0; i < n; i++) m[i] ? (minKept = Math.min(minKept, Math.abs(s[i]!))) : (maxDropped = Math.max(maxDropped, Math.abs(s[i]!)));
      assert.ok(minKept >= maxDropped);
    }
  }
  assert.deepEqual(Array.from(topKMask(Float32Array.of(1, 1, 1, 1), 2)), [1, 1, 0, 0]);
  const g = computeMasks(new Map([['a', Float32Array.of(5, 4, 3)], ['b', Float32Array.of(0.1, 0.2, 6)]]), 0.5, 'global');
  assert.deepEqual([...g.get('a')!, ...g.get('b')!], [1, 1, 0, 0, 0, 1]);
  assert.throws(() => computeMasks(new Map([['a', Float32Array.of(1)]]), 1, 'layer'), /--sparsity must be in \(0, 1\)/);
});

test('the straight-through gradient reaches the scores (dL/ds = dL/dw_eff ⊙ w ⊙ sign(s)) and never the frozen weights', () => {
  const w = tf.variable(tf.tensor1d([1, -2, 3, -4]), false);
  // a negative score ranks by |s| and its gradient goes through the absolute value
  const s = tf.variable(tf.tensor1d([0.1, -0.4, 0.3, 0.2]), true, 'score:test');
  const coeff = tf.tensor1d([1, 2, 3, 4]);
  const { grads } = tf.variableGrads(() => tf.sum(tf.mul(maskedWeightSTE(w, s, 2), coeff)) as tf.Scalar, [s]);
  assert.deepEqual(Array.from(grads[s.name]!.dataSync()), [1, 4, 9, -16]);
  const eff = maskedWeightSTE(w, s, 2).dataSync();
  assert.deepEqual(Array.from(eff, (v) => v + 0), [0, -2, 3, 0]);
});

function cfg(label: string, epochs: number, lr: number): TrainConfig {
  return {
    epochs, batchSize: 64, optimizer: { name: 'sgd', lr, momentum: 0.9, weightDecay: 1e-4 }, schedule: { kind: 'cosine', warmup: 0, milestones: [], gamma: 0.1 },
    seed: 0, augment: { cropPad: 0, flip: false }, evalLimit: 0, resume: false, label, quiet: true,
  };
}

for (const method of ['hydra', 'lwm', 'admm'] as const) {
  test(`${method}: weights outside the mask are exact zeros after fine-tuning, in memory and in the exported file`, async () => {
    const g = TfGraph.fromModel(loadModel('models/small_cnn.onnx'));
    const net = new Net(g, engine);
    const before = new Map(g.prunableNames().map((n) => [n, g.variables.get(n)!.dataSync().slice() as Float32Array]));
    const r = await pruneNet(net, small, makeObjective({ ...DEFAULT_OBJECTIVE, kind: 'natural' }), {
      method, sparsity: 0.9, allocation: 'layer', scoreInit: 'scaled', rho: 0.01, rhoGrowth: 1.5, structure: 'irregular',
      prune: cfg(`${method}:p`, 1, 0.05), finetune: cfg(`${method}:f`, 1, 0.01), resume: false, quiet: true,
    });
    for (const n of g.prunableNames()) {
      const m = r.masks.get(n)!;
      const w = g.variables.get(n)!.dataSync();
      assert.equal(m.reduce((a, b) => a + b, 0), keepCount(m.length, 0.9), `${n}: kept count`);
      for (let i = 0; i < w.length; i++) if (!m[i]) assert.equal(w[i], 0, `${n}[${i}] revived`);
      if (method === 'hydra') {
        // the score phase never touched the weights: kept weights changed only in fine-tuning
        assert.ok(r.phases[0]!.name === 'scores');
      }
      if (method === 'lwm') {
        // magnitude pruning keeps the largest |w| of the pretrained weights
        const mag = topKMask(before.get(n)!, keepCount(m.length, 0.9));
        assert.deepEqual(Array.from(m), Array.from(mag));
      }
    }
    const file = path.join(tmp, `${method}.onnx`);
    saveModel(g.exportModel(), file);
    const back = TfGraph.fromModel(loadModel(file));
    for (const n of g.prunableNames()) {
      const w = back.variables.get(n)!.dataSync();
      const m = r.masks.get(n)!;
      for (let i = 0; i < w.length; i++) if (!m[i]) assert.equal(w[i], 0, `${n}[${i}] not zero in the file`);
      let zeros = 0;
      for (let i = 0; i < w.length; i++) if (w[i] === 0) zeros++;
      assert.ok(zeros >= m.length - keepCount(m.length, 0.9), `${n}: exported sparsity below the mask's`);
    }
    back.dispose();
    net.dispose();
    g.dispose();
  });
}

test('HYDRA score phase trains only the scores: weights stay frozen', async () => {
  const g = TfGraph.fromModel(loadModel('models/small_cnn.onnx'));
  const net = new Net(g, engine);
  const before = new Map(g.trainableNames().map((n) => [n, g.variables.get(n)!.dataSync().slice() as Float32Array]));
  const r = await pruneNet(net, small, makeObjective({ ...DEFAULT_OBJECTIVE, kind: 'natural' }), {
    method: 'hydra', sparsity: 0.5, allocation: 'layer', scoreInit: 'scaled', rho: 0, rhoGrowth: 1, structure: 'irregular',
    prune: cfg('hydra:frozen', 1, 0.1), finetune: cfg('hydra:frozen-ft', 0, 0.01), resume: false, quiet: true,
  });
  for (const [n, w0] of before) {
    const w = g.variables.get(n)!.dataSync();
    const m = r.masks.get(n);
    for (let i = 0; i < w.length; i++) assert.equal(w[i], m && !m[i] ? 0 : w0[i], `${n}[${i}] changed`);
  }
  // and the learned masks differ from plain magnitude pruning (the scores moved)
  const differs = g.prunableNames().some((n) => {
    const mag = topKMask(before.get(n)!, keepCount(before.get(n)!.length, 0.5));
    return r.masks.get(n)!.some((v, i) => v !== mag[i]);
  });
  assert.ok(differs, 'score training left every mask equal to the magnitude mask');
  net.dispose();
  g.dispose();
});
