// CROWN verification (verify --crown): the margin bounds contain every sampled output of the ε-ball on the
// shipped file (onnxruntime), are never looser than IBP's, are strictly tighter on a trained network, and
// no CROWN-verified image is broken by an attack.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { createSession } from '../src/runtime/ort.js';
import { marginLowerBounds, verifiedFlags } from '../src/verify/ibp.js';
import { verifyModel } from '../src/verify/verify.js';
import { loadData } from '../src/data/index.js';
import { makeRng } from '../src/util/rng.js';

async function logitsOf(file: string, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const s = await createSession(file);
  try {
    const out = await s.session.run({ [s.inputNames[0]!]: new ort.Tensor('float32', x, shape) });
    return out[s.outputNames[0]!]!.data as Float32Array;
  } finally {
    await s.session.release();
  }
}

// α-CROWN differentiates the bound graph; MaxPool's relaxation is not differentiable (vgg_bn), and the
// deeper residual net takes minutes, so the slope optimisation is checked on the two small nets
const ALPHA = new Set(['mlp.onnx', 'small_cnn.onnx']);

for (const file of ['mlp.onnx', 'small_cnn.onnx', 'vgg_bn.onnx', 'resnet_small.onnx']) {
  test(`${file}: CROWN (and α-CROWN) margin bounds hold for 10,000 sampled points and are never looser than IBP's`, async () => {
    const path = `models/${file}`;
    const g = TfGraph.fromModel(loadModel(path));
    const inShape = g.inputs[0]!.shape.slice(1) as number[];
    const per = inShape.reduce((a, b) => a * b, 1);
    const n = 2;
    const rng = makeRng(`crown:${file}`);
    const x = Float32Array.from({ length: n * per }, () => 0.2 + 0.6 * rng());
    const z = await logitsOf(path, x, [n, ...inShape]);
    const k = z.length / n;
    const y = Int32Array.from({ length: n }, (_, i) => {
      let best = 0;
      for (let j = 1; j < k; j++) if (z[i * k + j]! > z[i * k + best]!) best = j;
      return best;
    });
    const eps = 0.002;
    const layers = { crown: 0, ibp: 0 };
    const crown = await marginLowerBounds(g, x, y, n, eps, { crown: { neurons: 4096 }, layers });
    const ibp = await marginLowerBounds(g, x, y, n, eps);
    assert.ok(layers.crown >= 1, `no ReLU layer bounded by CROWN (${JSON.stringify(layers)})`);
    for (let i = 0; i < crown.length; i++) assert.ok(crown[i]! >= ibp[i]! - 1e-5, `margin ${i}: CROWN ${crown[i]} below IBP ${ibp[i]}`);
    let bound = crown;
    if (ALPHA.has(file)) {
      // α-CROWN: a few optimisation steps; never below CROWN, and checked against the same samples
      const alpha = await marginLowerBounds(g, x, y, n, eps, { crown: { neurons: 4096, alpha: { steps: 3, lr: 0.1 } } });
      for (let i = 0; i < crown.length; i++) assert.ok(alpha[i]! >= crown[i]! - 1e-6, `margin ${i}: α-CROWN ${alpha[i]} below CROWN ${crown[i]}`);
      bound = alpha;
    }
    // 5,000 points per image: corners of the box (most extreme for piecewise-linear nets) and uniform points
    const m = 5000;
    for (let i = 0; i < n; i++) {
      const xs = new Float32Array(m * per);
      for (let s = 0; s < m; s++) {
        for (let d = 0; d < per; d++) {
          const c = x[i * per + d]!;
          const off = s % 2 === 0 ? (rng() < 0.5 ? -eps : eps) : (2 * rng() - 1) * eps;
          xs[s * per + d] = Math.min(1, Math.max(0, c + off));
        }
      }
      const zs = await logitsOf(path, xs, [m, ...inShape]);
      let worst = Infinity;
      for (let s = 0; s < m; s++) {
        for (let j = 0; j < k; j++) {
          const margin = zs[s * k + y[i]!]! - zs[s * k + j]!;
          const slack = margin - bound[i * k + j]!;
          worst = Math.min(worst, slack);
          assert.ok(slack >= -1e-4 * (1 + Math.abs(margin)), `${file} image ${i}: sampled margin ${margin} to class ${j} below the bound ${bound[i * k + j]}`);
        }
      }
      assert.ok(Number.isFinite(worst));
    }
  });
}

test('fashion_cnn.onnx: CROWN verifies more images than IBP at ε = 0.01 and no CROWN-verified image is broken by PGD', async () => {
  const data = loadData('fashion-mnist').test;
  const r = await verifyModel({
    model: 'models/fashion_cnn.onnx', data, dataSpec: 'fashion-mnist', limit: 48, batch: 64, provider: 'cpu', backend: 'ort',
    pgd: { eps: 0.01, alpha: 0.0025, steps: 20, restarts: 1, norm: 'linf', randomStart: true },
    ibp: { eps: 0.01 }, crown: { eps: 0.01, neurons: 4096 }, seed: 0, quiet: true,
  });
  assert.ok(r.crown && r.ibp && r.pgd);
  assert.equal(r.crown.broken_by_attack, 0);
  assert.ok(r.crown.verified > r.ibp.verified, `CROWN ${r.crown.verified} vs IBP ${r.ibp.verified} verified`);
  assert.ok(r.crown.verified_acc <= r.pgd.acc + 1e-9, 'verified accuracy above PGD accuracy');
  assert.equal(r.crown.gained_over_ibp! + r.ibp.verified >= r.crown.verified, true);
  // verifiedFlags: a margin of exactly 0 does not verify
  assert.deepEqual(Array.from(verifiedFlags(Float32Array.of(0, 1, 0, 0), Int32Array.of(0), 1, 4)), [0]);
});

test('fashion_cnn.onnx: α-CROWN raises the bounds of margins CROWN leaves open', async () => {
  const data = loadData('fashion-mnist').test;
  const g = TfGraph.fromModel(loadModel('models/fashion_cnn.onnx'));
  const n = 6;
  const x = data.x.subarray(0, n * 784);
  const y = data.y.subarray(0, n);
  const crown = await marginLowerBounds(g, x, y, n, 0.015, { crown: { neurons: 4096 } });
  const alpha = await marginLowerBounds(g, x, y, n, 0.015, { crown: { neurons: 4096, alpha: { steps: 5, lr: 0.1 } } });
  let gain = 0;
  for (let i = 0; i < crown.length; i++) {
    assert.ok(alpha[i]! >= crown[i]! - 1e-6);
    if (crown[i]! <= 0 && i % 10 !== y[Math.floor(i / 10)]) gain += alpha[i]! - crown[i]!;
  }
  assert.ok(gain > 0, `α-CROWN raised no open margin (total gain ${gain})`);
});
