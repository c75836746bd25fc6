// AutoAttack: APGD's checkpoint schedule and the DLR losses against hand computations, its WebAssembly L∞
// step against the JS one (bit for bit, as FAB's WebAssembly projection); the engine's
// logit-gradient backpropagation against Wᵀ·dz; its in-graph DLR loss and gradient against the JS
// reference; the FAB projection against a bisection; and the suite on
// linear classifiers, where the worst case within ε is analytic: robust accuracy must equal it, and the
// saved adversarial inputs must stay within ε and [0,1] and fool onnxruntime exactly on the broken images.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parse as parseNpy } from 'npyjs';
import { apgdCheckpoints, apgdStepLinf, apgdVerify, crossEntropy, SlotArrays } from '../src/verify/apgd.js';
import { dlrLoss, dlrRows, targetedDlrLoss } from '../src/engine/dlr.js';
import { fabTargeted, HyperplaneProjector, projectHyperplaneBox } from '../src/verify/autoattack.js';
import { formatEps } from '../src/verify/robustbench.js';
import { squareAttack } from '../src/verify/square.js';
import { OrtClassifier } from '../src/verify/classifier.js';
import { verifyModel } from '../src/verify/verify.js';
import { parseAutoAttack } from '../src/cli/verify.js';
import { makeDataset } from '../src/data/index.js';
import { loadModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { Net } from '../src/engine/net.js';
import { selectEngine } from '../src/engine/select.js';
import { makeRng } from '../src/util/rng.js';
import { UserError } from '../src/util/errors.js';
import { buildModel, encode, floatInit, node } from './helpers/build-model.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-autoattack-'));

test('APGD checkpoints follow p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), w_j = ⌈p_j·N⌉', () => {
  // p: 0, .22, .41, .57, .70, .80, .87, .93, .99 (next 1.05 > 1)
  assert.deepEqual(apgdCheckpoints(100), [0, 22, 41, 57, 70, 80, 87, 93, 99]);
  // N = 10: ⌈2.2⌉ = 3, ⌈4.1⌉ = 5, ⌈5.7⌉ = 6, 7, 8, ⌈8.7⌉ = 9, ⌈9.3⌉ = 10, ⌈9.9⌉ = 10 (collapses)
  assert.deepEqual(apgdCheckpoints(10), [0, 3, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(apgdCheckpoints(1000).slice(0, 4), [0, 220, 410, 570]);
});

test('DLR and targeted DLR: values and logit gradients equal hand computations and finite differences', () => {
  const z = [1, 4, 2, 3, 0.5];
  const dz = new Float64Array(5);
  // y = 1 is the top class: −(z_1 − z_3)/(z_1 − z_2) = −(4 − 3)/(4 − 2)
  // (the reference's 1e-12 in the denominator moves the values by ~1e-13)
  const near = (a: number, b: number, what: string): void => assert.ok(Math.abs(a - b) < 1e-10, `${what}: ${a}, expected ${b}`);
  near(dlrLoss(z, 0, 5, 1, dz), -0.5, 'DLR, y on top');
  // d/dz_y = −1/D + N/D² (y is π1) = −0.5 + 0.25; d/dz_3 = 1/D; d/dz_2 (π3) = −N/D² = −0.25
  [0, -0.25, -0.25, 0.5, 0].forEach((v, j) => near(dz[j]!, v, `dz[${j}]`));
  // y = 3 not on top: −(3 − 4)/(4 − 2) = 0.5; N = −1, D = 2: dz_3 = −0.5, dz_1 = 0.5 − 0.25, dz_2 = +0.25
  near(dlrLoss(z, 0, 5, 3, dz), 0.5, 'DLR, y second');
  [0, 0.25, 0.25, -0.5, 0].forEach((v, j) => near(dz[j]!, v, `dz[${j}]`));
  // targeted, y = 1, t = 4: −(4 − 0.5)/(4 − (2 + 1)/2) = −3.5/2.5
  near(targetedDlrLoss(z, 0, 5, 1, 4, dz), -1.4, 'targeted DLR');
  // dz_1 = −1/D + N/D² = −0.4 + 0.56; dz_4 = 0.4; π3 = class 2 and π4 = class 0: −N/(2D²) = −0.28 each
  [-0.28, 0.16, -0.28, 0, 0.4].forEach((v, j) => near(dz[j]!, v, `targeted dz[${j}]`));
  // finite differences on random logits (no ties), both losses; DLR is shift-invariant: Σ dz = 0
  const rng = makeRng('dlr-fd');
  for (let trial = 0; trial < 20; trial++) {
    const k = 4 + (trial % 7);
    const zz = Float64Array.from({ length: k }, () => 6 * rng() - 3);
    const y = trial % k;
    const t = (y + 1 + (trial % (k - 1))) % k;
    for (const [name, fn] of [['dlr', (v: Float64Array, g?: Float64Array) => dlrLoss(v, 0, k, y, g)], ['targeted', (v: Float64Array, g?: Float64Array) => targetedDlrLoss(v, 0, k, y, t, g)]] as const) {
      const g = new Float64Array(k);
      fn(zz, g);
      assert.ok(Math.abs(g.reduce((a, v) => a + v, 0)) < 1e-9, `${name}: Σ dz = ${g.reduce((a, v) => a + v, 0)}`);
      for (let j = 0; j < k; j++) {
        const h = 1e-6;
        const up = zz.slice();
        const dn = zz.slice();
        up[j]! += h;
        dn[j]! -= h;
        const num = (fn(up) - fn(dn)) / (2 * h);
        assert.ok(Math.abs(num - g[j]!) < 1e-5 * (1 + Math.abs(num)), `${name} trial ${trial} dz[${j}]: analytic ${g[j]}, numeric ${num}`);
      }
    }
  }
  assert.ok(Math.abs(crossEntropy([2, 0, 1], 0, 3, 0) - (Math.log(Math.exp(2) + 1 + Math.exp(1)) - 2)) < 1e-12);
});

test('APGD\'s L∞ step: the WebAssembly kernel equals apgdStepLinf bit for bit (box edges, zero and NaN gradients, momentum 1 and 0.75)', () => {
  const rng = makeRng('linf-step');
  const B = 3;
  const per = 785; // odd: the kernel's scalar tail too
  const slots = new SlotArrays(B, per);
  const eps = 0.1;
  // clean pixels on and near the box's faces, iterates inside the box
  for (let j = 0; j < B * per; j++) {
    const u = rng();
    slots.xc[j] = u < 0.2 ? 0 : u < 0.3 ? 1 : u < 0.35 ? eps : rng();
    slots.xa[j] = Math.min(Math.max(slots.xc[j]! + (2 * rng() - 1) * eps, 0), 1);
  }
  slots.xPrev.set(slots.xa);
  const ref = { xa: slots.xa.slice(), xPrev: slots.xPrev.slice() };
  for (let step = 0; step < 12; step++) {
    for (let j = 0; j < B * per; j++) {
      const u = rng();
      slots.grad[j] = u < 0.05 ? 0 : u < 0.07 ? NaN : 2 * rng() - 1;
    }
    const eta = (2 * eps) / 2 ** (step % 5);
    const a = step === 0 ? 1 : 0.75;
    for (let s = 0; s < B; s++) {
      slots.linfStep(s, eps, eta, a);
      const at = (v: Float32Array): Float32Array => v.subarray(s * per, (s + 1) * per);
      apgdStepLinf(at(ref.xa), at(ref.xPrev), at(slots.xc), at(slots.grad), eta, a, eps);
    }
    const bits = (v: Float32Array): number[] => [...new Uint32Array(v.buffer, v.byteOffset, v.length)];
    assert.deepEqual(bits(slots.xa), bits(ref.xa), `step ${step}: iterates`);
    assert.deepEqual(bits(slots.xPrev), bits(ref.xPrev), `step ${step}: previous iterates`);
  }
  for (let j = 0; j < B * per; j++) assert.ok(Math.abs(slots.xa[j]! - slots.xc[j]!) <= eps + 1e-6 && slots.xa[j]! >= 0 && slots.xa[j]! <= 1);
});

/** f(x) = Wᵀ·flatten(x) + b on 1×8×8 images, 10 classes: W is [64, 10] (Gemm without transposition). */
function linearClassifier(W: Float64Array, b: Float64Array): Uint8Array {
  return encode(buildModel({
    inputs: [{ name: 'x', shape: ['N', 1, 8, 8] }], outputs: [{ name: 'z', shape: ['N', 10] }],
    nodes: [node('Flatten', ['x'], ['f']), node('Gemm', ['f', 'W', 'B'], ['z'])],
    initializers: [floatInit('W', [64, 10], [...W]), floatInit('B', [10], [...b])],
  }));
}

const D = 64;
const K = 10;

/** Smallest margin z_y − z_j over classes j ≠ y and perturbations in the L∞ ball ∩ [0,1]^D: exact for a linear model. */
function linfWorstMargin(W: Float64Array, b: Float64Array, x: Float32Array, off: number, y: number, eps: number): number {
  let worst = Infinity;
  for (let j = 0; j < K; j++) {
    if (j === y) continue;
    let m = b[y]! - b[j]!;
    for (let p = 0; p < D; p++) {
      const u = W[p * K + y]! - W[p * K + j]!;
      const xp = x[off + p]!;
      m += u * (u > 0 ? xp - Math.min(eps, xp) : xp + Math.min(eps, 1 - xp));
    }
    worst = Math.min(worst, m);
  }
  return worst;
}

/** The same in L2 when the box is never reached: m_j − ε‖w_y − w_j‖ (and whether the box stays inactive). */
function l2WorstMargin(W: Float64Array, b: Float64Array, x: Float32Array, off: number, y: number, eps: number): { margin: number; boxFree: boolean } {
  let worst = Infinity;
  let boxFree = true;
  for (let j = 0; j < K; j++) {
    if (j === y) continue;
    let m = b[y]! - b[j]!;
    let nu = 0;
    for (let p = 0; p < D; p++) {
      const u = W[p * K + y]! - W[p * K + j]!;
      m += u * x[off + p]!;
      nu += u * u;
    }
    nu = Math.sqrt(nu);
    for (let p = 0; p < D; p++) {
      const v = x[off + p]! - (eps * (W[p * K + y]! - W[p * K + j]!)) / nu;
      if (v < 0 || v > 1) boxFree = false;
    }
    worst = Math.min(worst, m - eps * nu);
  }
  return { margin: worst, boxFree };
}

interface LinearProblem {
  W: Float64Array;
  b: Float64Array;
  bytes: Uint8Array;
  file: string;
  x: Float32Array;
  y: Int32Array;
  n: number;
  /** analytic verdict: 1 = correct and no input within ε changes the class */
  robust: Uint8Array;
}

/**
 * A random linear classifier and n images whose worst-case margin is at least `gap` away from 0 (so that
 * every attack worth the name decides them the analytic way); a few images carry a wrong label.
 */
function linearProblem(seed: string, n: number, eps: number, norm: 'linf' | 'l2', lo: number, hi: number, gap: number): LinearProblem {
  const rng = makeRng(seed);
  const W = Float64Array.from({ length: D * K }, () => 2 * rng() - 1);
  // biases centre the logits at the grey image, so that no class wins every image
  const b = Float64Array.from({ length: K }, (_, j) => -0.5 * Array.from({ length: D }, (_, q) => W[q * K + j]!).reduce((a, v) => a + v, 0) + 0.2 * (rng() - 0.5));
  const bytes = linearClassifier(W, b);
  const file = path.join(tmp, `linear-${seed}.onnx`);
  fs.writeFileSync(file, bytes);
  const x = new Float32Array(n * D);
  const y = new Int32Array(n);
  const robust = new Uint8Array(n);
  for (let i = 0; i < n;) {
    for (let p = 0; p < D; p++) x[i * D + p] = lo + (hi - lo) * rng();
    const z = Array.from({ length: K }, (_, j) => b[j]! + Array.from({ length: D }, (_, p) => W[p * K + j]! * x[i * D + p]!).reduce((a, v) => a + v, 0));
    const top = z.indexOf(Math.max(...z));
    const sorted = [...z].sort((a, c) => c - a);
    if (sorted[0]! - sorted[1]! < gap) continue; // a clear clean decision
    y[i] = i % 8 === 7 ? (top + 1) % K : top; // every 8th image mislabelled
    if (y[i] !== top) {
      i++;
      continue;
    }
    let margin: number;
    if (norm === 'linf') margin = linfWorstMargin(W, b, x, i * D, y[i]!, eps);
    else {
      const r = l2WorstMargin(W, b, x, i * D, y[i]!, eps);
      if (!r.boxFree) continue;
      margin = r.margin;
    }
    if (Math.abs(margin) < gap) continue;
    robust[i] = margin > 0 ? 1 : 0;
    i++;
  }
  return { W, b, bytes, file, x, y, n, robust };
}

test('the engine backpropagates a given logit gradient: Wᵀ·dz on a linear model, compiled engine and tfjs alike', () => {
  const p = linearProblem('logit-grad', 4, 0.05, 'linf', 0.1, 0.9, 0);
  const engine = selectEngine('ort');
  const compiled = new Net(TfGraph.fromModel(loadModel(p.bytes)), engine);
  const tfjs = new Net(TfGraph.fromModel(loadModel(p.bytes)), { ...engine, kind: 'cpu' });
  try {
    const rng = makeRng('dz');
    const dz = Float32Array.from({ length: 4 * K }, () => 2 * rng() - 1);
    const expect = new Float64Array(4 * D);
    for (let r = 0; r < 4; r++) for (let q = 0; q < D; q++) for (let j = 0; j < K; j++) expect[r * D + q]! += p.W[q * K + j]! * dz[r * K + j]!;
    for (const [name, net] of [['compiled', compiled], ['tfjs', tfjs]] as const) {
      const { grad, logits } = net.frozen().lossGrad(p.x, 4, { kind: 'logit-grad', dz });
      let err = 0;
      for (let i = 0; i < expect.length; i++) err = Math.max(err, Math.abs(grad[i]! - expect[i]!));
      assert.ok(err < 1e-4, `${name}: |grad − Wᵀdz| = ${err}`);
      const z = net.frozen().logits(p.x, 4);
      assert.ok(z.every((v, i) => Math.abs(v - logits[i]!) < 1e-5), `${name}: the logits that come with the gradient`);
    }
  } finally {
    compiled.dispose();
    tfjs.dispose();
  }
});

/**
 * Per row of `per` values: max |a − b| relative to the row's max |b|, or to 1e-4 when that is smaller (a
 * gradient that cancels to 0 in float32 can be 1e-12 in the reference's float64).
 */
function rowErrors(a: ArrayLike<number>, b: ArrayLike<number>, per: number): number[] {
  const out: number[] = [];
  for (let o = 0; o < b.length; o += per) {
    let err = 0;
    let scale = 0;
    for (let j = o; j < o + per; j++) {
      err = Math.max(err, Math.abs(a[j]! - b[j]!));
      scale = Math.max(scale, Math.abs(b[j]!));
    }
    out.push(err / Math.max(scale, 1e-4));
  }
  return out;
}

test('the engine\'s DLR loss and input gradient (one call; untargeted and targeted) equal the JS reference on fashion_cnn and on linear models with tied logits, compiled engine and tfjs alike', () => {
  const rng = makeRng('dlr-graph');
  const cases: { name: string; bytes: Uint8Array; x: Float32Array; n: number; labels: Int32Array; targets: Int32Array }[] = [];
  {
    const bytes = fs.readFileSync('models/fashion_cnn.onnx');
    const n = 6;
    const x = Float32Array.from({ length: n * 28 * 28 }, () => rng());
    const labels = Int32Array.from({ length: n }, (_, i) => i % K);
    cases.push({ name: 'fashion_cnn', bytes, x, n, labels, targets: Int32Array.from(labels, (l, i) => (l + 1 + (i % (K - 1))) % K) });
  }
  // at x = 0 the logits are the biases, exactly: ties among the top classes, which the engine must resolve as
  // the reference does (the lower class first; with distinct columns of W the choice shows in the input
  // gradient). Second model: the three top logits tie, the untargeted denominator is the bare 1e-12.
  const W = Float64Array.from({ length: D * K }, () => 2 * rng() - 1);
  for (const [name, bias] of [['ties below the top', [3, 2, 2, 2, 2, 1, 1, 0, -1, -1]], ['three-way tie on top', [2, 2, 2, 1, 1, 1, 0, 0, -1, -1]]] as const) {
    const n = 4;
    cases.push({ name, bytes: linearClassifier(W, Float64Array.from(bias)), x: new Float32Array(n * D), n, labels: Int32Array.of(0, 1, 2, 5), targets: Int32Array.of(3, 4, 0, 1) });
  }
  const engine = selectEngine('ort');
  for (const c of cases) {
    const per = c.x.length / c.n;
    for (const kind of ['ort', 'cpu'] as const) {
      const net = new Net(TfGraph.fromModel(loadModel(c.bytes)), { ...engine, kind });
      try {
        const f = net.frozen();
        for (const targets of [undefined, c.targets]) {
          const what = `${c.name}, ${kind === 'ort' ? 'compiled' : 'tfjs'}, ${targets ? 'targeted' : 'untargeted'}`;
          const r = f.lossGrad(c.x, c.n, { kind: 'dlr', labels: c.labels, targets });
          assert.ok(r.loss && r.loss.length === c.n, `${what}: a loss per example`);
          // the reference: the JS loss and logit gradient at the logits the engine returned, dz backpropagated
          const dz = new Float32Array(c.n * K);
          const loss = dlrRows(r.logits, c.n, K, c.labels, targets, dz);
          const z = f.logits(c.x, c.n);
          assert.ok(z.every((v, i) => Math.abs(v - r.logits[i]!) <= 1e-5 * (1 + Math.abs(v))), `${what}: the logits that come with the gradient`);
          for (let i = 0; i < c.n; i++) assert.ok(Math.abs(r.loss[i]! - loss[i]!) <= 1e-5 * (1 + Math.abs(loss[i]!)), `${what}: loss of row ${i} ${r.loss[i]}, reference ${loss[i]}`);
          const expect = f.lossGrad(c.x, c.n, { kind: 'logit-grad', dz }).grad;
          rowErrors(r.grad, expect, per).forEach((e, i) => assert.ok(e < 1e-5, `${what}: input gradient of row ${i} off by ${e} (relative)`));
          if (c.name === 'three-way tie on top' && !targets) assert.ok(Math.abs(r.loss[1]!) === 0 && Math.abs(dz[K + 0]! - 1e12) < 1e5, 'y = 1 tied on top with class 0: N = 0, ∂/∂z_0 = 1/1e-12');
        }
      } finally {
        net.dispose();
      }
    }
  }
});

/** Reference for the FAB projection: bisection on the perturbation size λ (an independent solver). */
function bisectProjection(t: Float64Array, w: Float64Array, b: number, norm: 'linf' | 'l2'): Float64Array {
  const c = w.reduce((a, v, i) => a + v * t[i]!, 0) - b;
  const sg = Math.sign(c);
  const move = (lambda: number): Float64Array => Float64Array.from(t, (ti, i) => {
    const u = sg * w[i]!;
    if (u === 0) return 0;
    const room = u > 0 ? ti : 1 - ti;
    const mag = norm === 'linf' ? Math.min(lambda, room) : Math.min(lambda * Math.abs(u), room);
    return u > 0 ? -mag : mag;
  });
  const reach = (d: Float64Array): number => -sg * d.reduce((a, v, i) => a + v * w[i]!, 0);
  if (reach(move(1e9)) <= Math.abs(c)) return move(1e9);
  let lo = 0;
  let hi = 1e9;
  for (let it = 0; it < 200; it++) {
    const mid = (lo + hi) / 2;
    if (reach(move(mid)) < Math.abs(c)) lo = mid;
    else hi = mid;
  }
  return move(hi);
}

test('FAB projection onto a hyperplane within [0,1]^d (L∞, L2) equals a bisection; infeasible planes give the nearest box corner', () => {
  const rng = makeRng('proj');
  const dim = 50;
  const d = new Float64Array(dim);
  for (let trial = 0; trial < 200; trial++) {
    const norm = trial % 2 ? 'l2' : 'linf';
    const t = Float64Array.from({ length: dim }, () => rng());
    const w = Float64Array.from({ length: dim }, (_, i) => (i % 9 === 4 ? 0 : 2 * rng() - 1));
    const wt = w.reduce((a, v, i) => a + v * t[i]!, 0);
    // mostly reachable planes; every 10th one beyond the box
    const b = wt + (trial % 10 === 9 ? 40 : 3) * (rng() - 0.5);
    projectHyperplaneBox(t, w, b, norm, d);
    const ref = bisectProjection(t, w, b, norm);
    let err = 0;
    for (let i = 0; i < dim; i++) {
      err = Math.max(err, Math.abs(d[i]! - ref[i]!));
      assert.ok(t[i]! + d[i]! >= -1e-12 && t[i]! + d[i]! <= 1 + 1e-12, 'inside the box');
    }
    assert.ok(err < 1e-7, `trial ${trial} (${norm}): max |d − bisection| = ${err}`);
    if (trial % 10 !== 9) assert.ok(Math.abs(w.reduce((a, v, i) => a + v * (t[i]! + d[i]!), 0) - b) < 1e-7, 'on the plane');
  }
});

test('FAB projection: the WebAssembly kernel equals projectHyperplaneBox bit for bit (L∞, L2; pixels at 0 and 1, zero and NaN weights, infeasible planes)', () => {
  const rng = makeRng('proj-wasm');
  const dim = 301; // odd
  const projector = new HyperplaneProjector(dim);
  const ref = new Float64Array(dim);
  for (let trial = 0; trial < 300; trial++) {
    const norm = trial % 2 ? 'l2' : 'linf';
    const t = Float32Array.from({ length: dim }, () => { const u = rng(); return u < 0.3 ? 0 : u < 0.4 ? 1 : rng(); });
    const w = Float32Array.from({ length: dim }, (_, i) => (i % 9 === 4 ? 0 : trial % 50 === 7 && i === 11 ? NaN : 2 * rng() - 1));
    const wt = w.reduce((a, v, i) => a + (Number.isNaN(v) ? 0 : v * t[i]!), 0);
    const b = wt + (trial % 10 === 9 ? 80 : 3) * (rng() - 0.5);
    const d = trial % 3 ? projector.d1 : projector.d2;
    projector.project(t, w, b, norm, d);
    projectHyperplaneBox(t, w, b, norm, ref);
    for (let i = 0; i < dim; i++) assert.ok(Object.is(d[i], ref[i]), `trial ${trial} (${norm}) pixel ${i}: ${d[i]}, JS ${ref[i]}`);
  }
  assert.throws(() => projector.project(new Float32Array(dim), new Float32Array(dim), 0, 'linf', new Float64Array(dim)), /d1 or d2/);
});

test('APGD-T and FAB-T alone each break exactly the analytically breakable images of a linear model (L∞), APGD-CE all but at most one', async () => {
  const eps = 0.01;
  const p = linearProblem('attacks', 48, eps, 'linf', 0.1, 0.9, 0.05);
  const correct = Uint8Array.from(p.y, (yi, i) => {
    const z = Array.from({ length: K }, (_, j) => p.b[j]! + Array.from({ length: D }, (_, q) => p.W[q * K + j]! * p.x[i * D + q]!).reduce((a, v) => a + v, 0));
    return z.indexOf(Math.max(...z)) === yi ? 1 : 0;
  });
  const nRobust = p.robust.reduce((a, v) => a + v, 0);
  const nCorrect = correct.reduce((a, v) => a + v, 0);
  assert.ok(nRobust >= 8 && nCorrect - nRobust >= 8, `a mix is needed: ${nRobust} robust of ${nCorrect} correct`);
  const net = new Net(TfGraph.fromModel(loadModel(p.bytes)), selectEngine('ort'));
  const clf = await OrtClassifier.open(p.bytes, [1, 8, 8], K, { maxBatch: 64 });
  try {
    const f = net.frozen();
    const cfg = { eps, norm: 'linf' as const, iterations: 100, rho: 0.75, momentum: 0.75 };
    // targets: the classes by decreasing clean logit, ranks 1..9
    const ranks = (r: number): Int32Array => Int32Array.from({ length: p.n }, (_, i) => {
      const z = f.logits(p.x.subarray(i * D, (i + 1) * D), 1);
      return [...Array(K).keys()].sort((a, c) => z[c]! - z[a]!)[r]!;
    });
    const check = async (name: string, alive: Uint8Array, inputs: Map<number, Float32Array>, exact = true): Promise<void> => {
      if (exact) assert.deepEqual([...alive], [...p.robust], `${name}: robust flags differ from the analytic ones`);
      else {
        // nothing robust broken, and at most one breakable image missed
        for (let i = 0; i < p.n; i++) if (p.robust[i]) assert.equal(alive[i], 1, `${name} broke the robust image ${i}`);
        const missed = [...alive].filter((v, i) => v && !p.robust[i]).length;
        assert.ok(missed <= 1, `${name} missed ${missed} breakable images`);
      }
      for (const [i, v] of inputs) {
        for (let q = 0; q < D; q++) {
          const dlt = Math.abs(v[q]! - p.x[i * D + q]!);
          assert.ok(dlt <= eps + 1e-6 && v[q]! >= 0 && v[q]! <= 1, `${name}: image ${i} pixel ${q} moved ${dlt}`);
        }
        assert.notEqual((await clf.predict(v, 1))[0], p.y[i], `${name}: image ${i}'s input does not fool onnxruntime`);
      }
    };
    {
      const alive = correct.slice();
      const inputs = new Map<number, Float32Array>();
      await apgdVerify(f, clf, p.x, p.y, p.n, alive, 'ce', cfg, makeRng('apgd-ce'), { batch: 64, onFooled: (i, v) => inputs.set(i, v.slice()) });
      // cross-entropy pulls toward every class at once: its maximum need not be the worst single margin
      await check('APGD-CE', alive, inputs, false);
    }
    for (const attack of ['APGD-T', 'FAB-T']) {
      const alive = correct.slice();
      const inputs = new Map<number, Float32Array>();
      for (let r = 1; r <= 9; r++) {
        const targets = ranks(r);
        const onFooled = (i: number, v: Float32Array): void => void inputs.set(i, v.slice());
        if (attack === 'APGD-T') await apgdVerify(f, clf, p.x, p.y, p.n, alive, 'dlr-targeted', cfg, makeRng(`apgd-t${r}`), { batch: 64, targets, onFooled });
        else await fabTargeted(f, clf, p.x, p.y, p.n, alive, targets, { eps, norm: 'linf', iterations: 100, alphaMax: 0.1, eta: 1.05, beta: 0.9 }, { batch: 64, onFooled });
      }
      await check(attack, alive, inputs);
    }
  } finally {
    await clf.release();
    net.dispose();
  }
});

test('verify --autoattack standard (L∞) on a linear model: robust accuracy is the analytic one; saved inputs within ε and [0,1] fool onnxruntime exactly on the broken images', async () => {
  const eps = 0.01;
  const p = linearProblem('suite', 40, eps, 'linf', 0.1, 0.9, 0.05);
  const npy = path.join(tmp, 'adv.npy');
  const rb = path.join(tmp, 'robustbench.json');
  const data = makeDataset('linear', p.x, p.y, [1, 8, 8], K);
  const r = await verifyModel({
    model: p.file, data, dataSpec: 'linear-test', batch: 32, provider: 'cpu', backend: 'ort', quiet: true, seed: 3,
    autoattack: { eps, norm: 'linf', version: 'standard' }, saveAdversarial: npy, robustbench: rb,
  });
  const aa = r.autoattack!;
  const analytic = p.robust.reduce((a, v) => a + v, 0) / p.n;
  assert.ok(analytic > 0.2 && analytic < 0.7, `a mix is needed: analytic ${analytic}`);
  assert.equal(aa.acc, analytic, `AutoAttack ${aa.acc}, analytic ${analytic}`);
  assert.equal(r.robust!.acc, analytic);
  assert.deepEqual(aa.per_attack.map((row) => row.attack), ['APGD-CE', 'APGD-T', 'FAB-T', 'Square']);
  assert.equal(aa.per_attack.reduce((a, row) => a + row.broken, 0), r.benign.correct - Math.round(analytic * p.n));
  assert.equal(aa.per_attack.at(-1)!.acc_after, aa.acc);
  assert.ok(aa.candidates > 0 && aa.ort_engine_disagreements === 0);

  // the saved inputs: NumPy v1.0, header padded to 64 bytes, float32 [n, 1, 8, 8]
  const bytes = fs.readFileSync(npy);
  assert.equal(bytes.subarray(0, 8).toString('latin1'), '\x93NUMPY\x01\x00');
  assert.equal((10 + bytes.readUInt16LE(8)) % 64, 0);
  const arr = parseNpy(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  assert.deepEqual(arr.shape, [p.n, 1, 8, 8]);
  assert.equal(arr.dtype, 'f4');
  const adv = arr.data as Float32Array;
  for (let i = 0; i < adv.length; i++) {
    assert.ok(Math.abs(adv[i]! - p.x[i]!) <= eps + 1e-6, `image ${Math.floor(i / D)} moved by ${Math.abs(adv[i]! - p.x[i]!)}`);
    assert.ok(adv[i]! >= 0 && adv[i]! <= 1);
  }
  const clf = await OrtClassifier.open(p.bytes, [1, 8, 8], K);
  const pred = await clf.predict(adv, p.n);
  await clf.release();
  for (let i = 0; i < p.n; i++) assert.equal(pred[i] === p.y[i], p.robust[i] === 1, `image ${i}: onnxruntime says ${pred[i]}, label ${p.y[i]}, analytic robust ${p.robust[i]}`);

  const entry = JSON.parse(fs.readFileSync(rb, 'utf8'));
  assert.equal(entry.threat_model, 'Linf');
  assert.equal(entry.eps, '0.01');
  assert.equal(entry.additional_data, false);
  assert.equal(entry.dataset, 'linear-test');
  assert.equal(entry.n_examples, p.n);
  assert.equal(entry.autoattack_acc, (100 * analytic).toFixed(2));
  assert.equal(entry.clean_acc, (100 * r.benign.acc).toFixed(2));
  assert.match(entry.architecture, /^ONNX graph 'g' \(onnx-hydra-tests\): (Gemm×1|Flatten×1)/);
  assert.match(entry.architecture, /650 parameters$/);
  assert.equal(formatEps(8 / 255), '8/255');
});

test('verify --autoattack standard (L2) on a linear model: robust accuracy is the analytic m − ε‖w_y − w_j‖ one', async () => {
  const eps = 0.03;
  const p = linearProblem('suite-l2', 32, eps, 'l2', 0.3, 0.7, 0.05);
  const data = makeDataset('linear', p.x, p.y, [1, 8, 8], K);
  const npy = path.join(tmp, 'adv-l2.npy');
  const r = await verifyModel({
    model: p.file, data, dataSpec: 'linear-test', batch: 32, provider: 'cpu', backend: 'ort', quiet: true, seed: 4,
    autoattack: { eps, norm: 'l2', version: 'standard' }, saveAdversarial: npy,
  });
  const analytic = p.robust.reduce((a, v) => a + v, 0) / p.n;
  assert.ok(analytic > 0.2 && analytic < 0.8, `a mix is needed: analytic ${analytic}`);
  assert.equal(r.autoattack!.acc, analytic);
  const bytes = fs.readFileSync(npy);
  const adv = parseNpy(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)).data as Float32Array;
  for (let i = 0; i < p.n; i++) {
    let s = 0;
    for (let q = 0; q < D; q++) s += (adv[i * D + q]! - p.x[i * D + q]!) ** 2;
    assert.ok(Math.sqrt(s) <= eps + 1e-5, `image ${i}: L2 distance ${Math.sqrt(s)}`);
  }
});

test('Square (L∞ and L2, AutoAttack settings) alone: never breaks a robust image, breaks most breakable ones, with inputs within ε that fool onnxruntime', async () => {
  for (const norm of ['linf', 'l2'] as const) {
    const eps = norm === 'linf' ? 0.01 : 0.03;
    const p = linearProblem(`square-${norm}`, 32, eps, norm, norm === 'linf' ? 0.1 : 0.3, norm === 'linf' ? 0.9 : 0.7, 0.05);
    const clf = await OrtClassifier.open(p.bytes, [1, 8, 8], K, { maxBatch: 64 });
    try {
      const alive = Uint8Array.from(await clf.predict(p.x, p.n), (c, i) => (c === p.y[i] ? 1 : 0));
      const breakable = [...alive].filter((v, i) => v && !p.robust[i]).length;
      const inputs = new Map<number, Float32Array>();
      await squareAttack(clf, p.x, p.y, p.n, [1, 8, 8], alive, { eps, queries: 5000, pInit: 0.8, norm, scheduleQueries: 10000 }, makeRng(`sq-${norm}`), undefined, (i, v) => inputs.set(i, v.slice()));
      for (let i = 0; i < p.n; i++) if (p.robust[i]) assert.equal(alive[i], 1, `${norm}: robust image ${i} broken`);
      assert.ok(inputs.size >= 0.5 * breakable, `${norm}: Square broke ${inputs.size} of ${breakable} breakable images`);
      for (const [i, v] of inputs) {
        let dist = 0;
        for (let q = 0; q < D; q++) {
          const dl = Math.abs(v[q]! - p.x[i * D + q]!);
          dist = norm === 'linf' ? Math.max(dist, dl) : dist + dl * dl;
          assert.ok(v[q]! >= 0 && v[q]! <= 1);
        }
        if (norm === 'l2') dist = Math.sqrt(dist);
        assert.ok(dist <= eps + 1e-6, `${norm}: image ${i} at distance ${dist}`);
        assert.notEqual((await clf.predict(v, 1))[0], p.y[i]);
        assert.equal(alive[i], 0);
      }
    } finally {
      await clf.release();
    }
  }
});

test('--autoattack: bad settings are one-line errors naming the flag', () => {
  const def = { eps: 0.1, l2eps: 1 };
  assert.deepEqual(parseAutoAttack('', def), { eps: 0.1, norm: 'linf', version: 'standard' });
  assert.deepEqual(parseAutoAttack('norm=l2,version=fast', def), { eps: 1, norm: 'l2', version: 'fast' });
  assert.deepEqual(parseAutoAttack('eps=0.03', def), { eps: 0.03, norm: 'linf', version: 'standard' });
  for (const [spec, pattern] of [
    ['eps=-0.1', /^--autoattack: eps must be ≥ 0, got '-0\.1'$/],
    ['norm=l1', /^--autoattack: norm must be linf or l2, got 'l1'$/],
    ['version=plus', /^--autoattack: version must be standard or fast, got 'plus'$/],
    ['steps=10', /^--autoattack: unknown key 'steps'/],
    ['eps', /^--autoattack: expected key=value pairs/],
  ] as const) {
    assert.throws(() => parseAutoAttack(spec, def), (e: Error) => e instanceof UserError && pattern.test(e.message) && !e.message.includes('\n'), spec);
  }
});

test('verify on the command line: a bad --autoattack, or --save-adversarial without it, ends in one line naming the flag', () => {
  for (const [args, pattern] of [
    [['--autoattack', 'eps=-1'], /^onnx-hydra: error: --autoattack: eps must be ≥ 0, got '-1'$/],
    [['--save-adversarial', path.join(tmp, 'x.npy')], /^onnx-hydra: error: --save-adversarial needs --autoattack/],
  ] as const) {
    const r = spawnSync(process.execPath, [path.resolve('bin/onnx-hydra.js'), 'verify', 'models/mlp.onnx', '--limit', '5', ...args], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, pattern);
  }
});
