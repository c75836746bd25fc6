// Verification: statistics against published values and closed forms, IBP against a hand computation and
// sampling, the QDQ float graph against onnxruntime, and `verify` against PyTorch's own numbers for a model
// PyTorch trained (models/fashion_cnn.onnx, models/fashion_cnn.reference.json).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { NoiseSource } from '../src/verify/noise.js';
import { binomTestHalf, certify, sampleCounts, clopperPearsonLower, clopperPearsonUpper, gaussianRadius, predictSmoothed } from '../src/verify/smoothing.js';
import { OrtClassifier } from '../src/verify/classifier.js';
import { marginLowerBounds, verifiedFlags } from '../src/verify/ibp.js';
import { squareFraction } from '../src/verify/square.js';
import { verifyModel } from '../src/verify/verify.js';
import { stripQdq, quantizeInt8 } from '../src/quant/qdq.js';
import { loadModel, encodeModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { createSession, runSession } from '../src/runtime/ort.js';
import { loadData } from '../src/data/index.js';
import { addGaussian, addGaussianSeeded, makeRng } from '../src/util/rng.js';
import { buildModel, encode, floatInit, node } from './helpers/build-model.js';

test('Clopper-Pearson bounds and the binomial test match published values and closed forms', () => {
  // R: binom.test(7, 20) → 95% CI 0.1539092 0.5921885, p-value 0.2632; binom.test(60, 100) → p-value 0.05689
  assert.ok(Math.abs(clopperPearsonLower(7, 20, 0.025) - 0.1539092) < 5e-7);
  assert.ok(Math.abs(clopperPearsonUpper(7, 20, 0.025) - 0.5921885) < 5e-7);
  assert.ok(Math.abs(binomTestHalf(7, 20) - 0.2632) < 5e-5);
  assert.ok(Math.abs(binomTestHalf(60, 100) - 0.05689) < 5e-6);
  // closed forms: Beta(n, 1) has CDF pⁿ, Beta(1, n) has CDF 1 − (1 − p)ⁿ
  for (const n of [10, 100, 100000]) {
    assert.ok(Math.abs(clopperPearsonLower(n, n, 0.001) - 0.001 ** (1 / n)) < 1e-12);
    assert.ok(Math.abs(clopperPearsonUpper(0, n, 0.001) - (1 - 0.001 ** (1 / n))) < 1e-12);
    assert.ok(Math.abs(clopperPearsonLower(1, n, 0.05) - (1 - 0.95 ** (1 / n))) < 1e-12);
  }
  assert.equal(clopperPearsonLower(0, 50, 0.001), 0);
  assert.ok(Math.abs(gaussianRadius(0.5, 0.975) - 0.5 * 1.959963985) < 1e-8);
});

test('smoothing noise (WebAssembly ziggurat): variance, kurtosis and the tail masses beyond 1, 2, 3, 3.5 σ match the normal distribution', () => {
  const n = 4_000_000;
  const out = new Float32Array(n);
  const base = Float32Array.from({ length: 784 }, (_, i) => i / 784);
  addGaussian(makeRng('zig'), base, 0.5, out);
  let s1 = 0;
  let s2 = 0;
  let s4 = 0;
  const cut = [1, 2, 3, 3.5]; // 3.5 is beyond the ziggurat's base strip (R = 3.44): the tail code
  const tails = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) {
    const z = (out[i]! - base[i % 784]!) / 0.5;
    s1 += z;
    s2 += z * z;
    s4 += z ** 4;
    for (let k = 0; k < cut.length; k++) if (Math.abs(z) > cut[k]!) tails[k]!++;
  }
  assert.ok(Math.abs(s1 / n) < 4 / Math.sqrt(n), `mean ${s1 / n}`);
  assert.ok(Math.abs(s2 / n - 1) < 4 * Math.sqrt(2 / n), `variance ${s2 / n}`);
  assert.ok(Math.abs(s4 / n - 3) < 4 * Math.sqrt(96 / n), `fourth moment ${s4 / n}`);
  [0.3173105, 0.0455003, 0.0026998, 0.00046525].forEach((p, k) => {
    const f = tails[k]! / n;
    assert.ok(Math.abs(f - p) < 4 * Math.sqrt((p * (1 - p)) / n), `P(|z| > ${cut[k]}) = ${f}, expected ${p}`);
  });
});

test('smoothing noise: the base image repeats exactly (any image size, partial last chunk); a seed gives one stream, prefixes agree', () => {
  for (const per of [7, 784, 20_001]) {
    const base = Float32Array.from({ length: per }, (_, i) => Math.sin(i));
    const out = new Float32Array(3 * per + 5);
    addGaussianSeeded([1, 2, 3, 4], base, 0, out);
    for (let i = 0; i < out.length; i++) assert.equal(out[i], base[i % per], `per ${per}, index ${i}`);
  }
  const base = new Float32Array(784);
  const long = new Float32Array(50_000);
  const short = new Float32Array(33_333);
  addGaussianSeeded([5, 6, 7, 8], base, 1, long);
  addGaussianSeeded([5, 6, 7, 8], base, 1, short);
  assert.deepEqual(short, long.subarray(0, short.length));
  const other = new Float32Array(33_333);
  addGaussianSeeded([5, 6, 7, 9], base, 1, other);
  assert.ok(other.some((v, i) => v !== short[i]));
});

/** f(x) = [w·x + b, 0] on 1×4×4 images: the smoothed classifier's exact radius is (w·x + b)/‖w‖. */
function linearModel(w: number[], b: number): Uint8Array {
  const W = new Array(16 * 2).fill(0);
  for (let i = 0; i < 16; i++) W[i * 2] = w[i]!;
  return encode(buildModel({
    inputs: [{ name: 'x', shape: ['N', 1, 4, 4] }], outputs: [{ name: 'z', shape: ['N', 2] }],
    nodes: [node('Flatten', ['x'], ['f']), node('Gemm', ['f', 'W', 'B'], ['z'])],
    initializers: [floatInit('W', [16, 2], W), floatInit('B', [2], [b, 0])],
  }));
}

test('randomized smoothing: CERTIFY on a linear classifier returns the closed-form radius (from below), PREDICT the class', async () => {
  const w = Array.from({ length: 16 }, (_, i) => ((i % 5) - 2) / 3);
  const norm = Math.sqrt(w.reduce((a, v) => a + v * v, 0));
  const x = Float32Array.from({ length: 16 }, (_, i) => 0.5 + 0.02 * (i % 3));
  const wx = w.reduce((a, v, i) => a + v * x[i]!, 0);
  const clf = await OrtClassifier.open(linearModel(w, 0.3 * norm - wx), [1, 4, 4], 2, { maxBatch: 5000 });
  try {
    const c = { sigma: 0.25, n0: 100, n: 20000, alpha: 0.001, batch: 5000 };
    const r = await certify(clf, x, c, makeRng('certify'));
    assert.equal(r.prediction, 0);
    // exact: 0.3; with n = 20,000 and α = 0.001 the Clopper-Pearson bound costs ≈ 0.01
    assert.ok(r.radius <= 0.3 && r.radius > 0.27, `radius ${r.radius}`);
    assert.equal(await predictSmoothed(clf, x, c, makeRng('predict')), 0);
    // on the decision boundary: p_A ≈ ½, CERTIFY abstains
    const clf0 = await OrtClassifier.open(linearModel(w, -wx), [1, 4, 4], 2, { maxBatch: 5000 });
    assert.equal((await certify(clf0, x, c, makeRng('b'))).prediction, -1);
    await clf0.release();
  } finally {
    await clf.release();
  }
});

test('smoothing noise drawn in the worker thread is the inline noise: same seed, same counts', async () => {
  const w = Array.from({ length: 16 }, (_, i) => ((i % 5) - 2) / 3);
  const x = Float32Array.from({ length: 16 }, (_, i) => 0.5 + 0.02 * (i % 3));
  const wx = w.reduce((a, v, i) => a + v * x[i]!, 0);
  // on the decision boundary: every noise draw matters to the counts
  const clf = await OrtClassifier.open(linearModel(w, -wx), [1, 4, 4], 2, { maxBatch: 1000 });
  const noise = new NoiseSource();
  try {
    assert.ok(noise.threaded, 'no worker thread');
    const c = { sigma: 0.25, n0: 100, n: 7300, alpha: 0.001, batch: 1000 };
    const a = await sampleCounts(clf, x, c.n, c, makeRng('same'), noise);
    const b = await sampleCounts(clf, x, c.n, c, makeRng('same'));
    assert.deepEqual([...a], [...b]);
    assert.equal(a[0]! + a[1]!, c.n);
    assert.ok(Math.abs(a[0]! / c.n - 0.5) < 0.05, `counts ${a}`);
  } finally {
    await noise.close();
    await clf.release();
  }
});

test('IBP margins equal a hand computation and bound 10,000 random points of the ε-box', async () => {
  // x ∈ R² (image 1×1×2) → h = relu(W1 x + b1) → z = W2 h + b2 (3 classes)
  const W1 = [[1, -1], [2, 1]];
  const b1 = [0.1, -0.5];
  const W2 = [[1, -1], [0.5, 2], [-1, 1]];
  const b2 = [0, 0.2, -0.1];
  const model = buildModel({
    inputs: [{ name: 'x', shape: ['N', 1, 1, 2] }], outputs: [{ name: 'z', shape: ['N', 3] }],
    nodes: [node('Flatten', ['x'], ['f']), node('Gemm', ['f', 'W1', 'b1'], ['a'], { transB: 1 }), node('Relu', ['a'], ['h']), node('Gemm', ['h', 'W2', 'b2'], ['z'], { transB: 1 })],
    initializers: [floatInit('W1', [2, 2], W1.flat()), floatInit('b1', [2], b1), floatInit('W2', [3, 2], W2.flat()), floatInit('b2', [3], b2)],
  });
  const graph = TfGraph.fromModel(loadModel(encode(model)));
  const x = Float32Array.of(0.5, 0.3);
  const eps = 0.1;
  const y = Int32Array.of(1);
  const lower = await marginLowerBounds(graph, x, y, 1, eps);
  // by hand: x ∈ [0.4,0.6]×[0.2,0.4]; a1 = x1 − x2 + 0.1 ∈ [0.1, 0.5]; a2 = 2x1 + x2 − 0.5 ∈ [0.5, 1.1];
  // h = a (both positive). Margin class 1 vs 0: (W2[1] − W2[0])·h + 0.2 = −0.5 h1 + 3 h2 + 0.2 ≥ −0.25 + 1.5 + 0.2 = 1.45;
  // class 1 vs 2: 1.5 h1 + h2 + 0.3 ≥ 0.15 + 0.5 + 0.3 = 0.95.
  assert.ok(Math.abs(lower[0]! - 1.45) < 1e-5, `margin vs class 0: ${lower[0]}`);
  assert.ok(Math.abs(lower[1]!) < 1e-7);
  assert.ok(Math.abs(lower[2]! - 0.95) < 1e-5, `margin vs class 2: ${lower[2]}`);
  assert.deepEqual([...verifiedFlags(lower, y, 1, 3)], [1]);
  // sampling: on a random ReLU net (export of PyTorch), margins of 10,000 points never go below the bounds
  const g2 = TfGraph.fromModel(loadModel('models/small_cnn.onnx'));
  const per = 784;
  const rng = makeRng('ibp-box');
  const x0 = Float32Array.from({ length: per }, () => rng());
  const lb = await marginLowerBounds(g2, x0, Int32Array.of(3), 1, 0.02);
  const s = await createSession('models/small_cnn.onnx');
  const n = 10000;
  const pts = new Float32Array(1000 * per);
  let worst = Infinity;
  for (let done = 0; done < n; done += 1000) {
    for (let i = 0; i < pts.length; i++) {
      const c = x0[i % per]!;
      pts[i] = Math.min(1, Math.max(0, c + (2 * rng() - 1) * 0.02));
    }
    const [z] = await runSession(s, [{ data: pts, shape: [1000, 1, 28, 28] }]);
    for (let r = 0; r < 1000; r++) for (let j = 0; j < 10; j++) {
      const m = z!.data[r * 10 + 3]! - z!.data[r * 10 + j]!;
      worst = Math.min(worst, m - lb[j]!);
    }
  }
  await s.session.release();
  assert.ok(worst >= -1e-4, `a sampled margin is below its IBP lower bound by ${-worst}`);
  graph.dispose();
  g2.dispose();
});

test('Square attack schedule follows the paper (p halves at fixed fractions of 10,000 queries)', () => {
  assert.equal(squareFraction(0.05, 5, 10000), 0.05);
  assert.equal(squareFraction(0.05, 30, 10000), 0.025);
  assert.equal(squareFraction(0.05, 600, 10000), 0.05 / 16);
  assert.equal(squareFraction(0.05, 9000, 10000), 0.05 / 512);
  assert.equal(squareFraction(0.05, 60, 1000), 0.05 / 16); // 60/1000 of the budget = 600/10000
});

test('QDQ float graph: dequantised weights and straight-through activations track the int8 file', async () => {
  const model = loadModel('models/small_cnn.onnx');
  const d = loadData('fashion-mnist').test;
  const n = 256;
  const per = 784;
  const q = await quantizeInt8(model, { x: d.x.subarray(0, n * per), shape: [n, 1, 28, 28] }, { calibration: 'minmax', percentile: 99.99 });
  const st = stripQdq(q.model);
  assert.ok(st.quantized && st.weights === 4 && st.activations === 4, JSON.stringify({ w: st.weights, a: st.activations }));
  assert.ok(!st.model.proto.graph!.node!.some((x) => /Quantize/.test(x.opType ?? '')));
  const sq = await createSession(encodeModel(q.model));
  const sf = await createSession(encodeModel(st.model));
  const [zq] = await runSession(sq, [{ data: d.x.subarray(0, n * per), shape: [n, 1, 28, 28] }]);
  const [zf] = await runSession(sf, [{ data: d.x.subarray(0, n * per), shape: [n, 1, 28, 28] }]);
  let maxAbs = 0;
  let diff = 0;
  for (let i = 0; i < zq!.data.length; i++) (maxAbs = Math.max(maxAbs, Math.abs(zf!.data[i]!))), (diff = Math.max(diff, Math.abs(zq!.data[i]! - zf!.data[i]!)));
  assert.ok(diff < 0.05 * (1 + maxAbs), `int8 vs float-graph logits differ by ${diff} (max |z| ${maxAbs})`);
  assert.equal(stripQdq(model).model, model);
  await sq.session.release();
  await sf.session.release();
});

const REF = 'models/fashion_cnn.reference.json';
test('verify on a PyTorch-trained export: benign equals PyTorch to the last image, PGD-20 within ±2 points, IBP never contradicts the attacks', { skip: !fs.existsSync(REF) && 'run models/train_fashion_cnn.py' }, async () => {
  const ref = JSON.parse(fs.readFileSync(REF, 'utf8'));
  const data = loadData('fashion-mnist');
  const r = await verifyModel({
    model: 'models/fashion_cnn.onnx', data: data.test, dataSpec: data.spec, batch: 500, provider: 'cpu', backend: 'ort', quiet: true, seed: 0,
    pgd: { eps: ref.pgd.eps, alpha: ref.pgd.alpha, steps: ref.pgd.steps, restarts: 1, norm: 'linf', randomStart: true },
  });
  assert.equal(r.data.n, 10000);
  assert.equal(r.benign.correct, ref.benign_correct);
  assert.ok(Math.abs(r.pgd!.acc - ref.pgd_acc) <= 0.02, `PGD-20: ours ${r.pgd!.acc}, PyTorch ${ref.pgd_acc}`);
  assert.equal(r.pgd!.ort_tfjs_disagreements, 0);
  // early stopping: only correctly classified examples were attacked, and fooled ones stopped early
  assert.ok(r.pgd!.acc <= r.benign.acc);
  assert.ok(r.pgd!.engine_steps < r.benign.correct * (ref.pgd.steps + 1), `engine steps ${r.pgd!.engine_steps}`);
  assert.ok(r.pgd!.engine_steps >= Math.round(r.pgd!.acc * 10000) * (ref.pgd.steps + 1));
  // IBP soundness: at ε = 0.01 nothing verified may be broken by PGD at the same ε (or be misclassified)
  const small = await verifyModel({
    model: 'models/fashion_cnn.onnx', data: data.test, dataSpec: data.spec, limit: 1000, batch: 250, provider: 'cpu', backend: 'ort', quiet: true, seed: 1,
    pgd: { eps: 0.01, alpha: 0.0025, steps: 20, restarts: 2, norm: 'linf', randomStart: true }, ibp: { eps: 0.01 },
  });
  assert.ok(small.ibp!.verified > 0, 'IBP verified nothing at ε 0.01');
  assert.equal(small.ibp!.broken_by_attack, 0);
  assert.ok(small.ibp!.verified_acc <= small.pgd!.acc);
});
