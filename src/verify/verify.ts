// `verify`: the verdict on the ONNX file onnxruntime-node runs: benign accuracy, white-box PGD (gradients
// from onnx-hydra's graph of the same file, every candidate re-checked by onnxruntime), the black-box
// Square attack on the artifact, the AutoAttack suite, randomized-smoothing certification and IBP verified
// accuracy.
import fs from 'node:fs';
import { loadModel, declaredShape, realInputs, encodeModel } from '../onnx/model.js';
import { withInputNormalization } from '../onnx/normalize-input.js';
import { stripQdq } from '../quant/qdq.js';
import { TfGraph, type PrepareOptions } from '../graph/graph.js';
import { Net } from '../engine/net.js';
import { selectEngine, type BackendChoice } from '../engine/select.js';
import { checkDataFitsModel, type Dataset } from '../data/index.js';
import { makeRng } from '../util/rng.js';
import { progressBar } from '../util/progress.js';
import { UserError } from '../util/errors.js';
import type { Provider } from '../runtime/ort.js';
import { sha256, summarize } from '../graph/analyze.js';
import { measureLatency, type LatencyResult } from '../runtime/latency.js';
import { OrtClassifier } from './classifier.js';
import type { PgdEvalConfig } from './robustness.js';
import { pgdVerify } from './pgd.js';
import { squareAttack, type SquareConfig } from './square.js';
import { autoAttack, type AutoAttackConfig, type AutoAttackResult } from './autoattack.js';
import { encodeNpyFloat32 } from './npy.js';
import { robustBenchEntry } from './robustbench.js';
import { writeFileAtomic } from '../util/fs.js';
import { NoiseSource } from './noise.js';
import { ABSTAIN, certify, predictSmoothed, type SmoothingConfig } from './smoothing.js';
import { marginLowerBounds, verifiedFlags } from './ibp.js';

export interface VerifyOptions {
  model: string;
  data: Dataset;
  dataSpec: string;
  limit?: number;
  batch: number;
  provider: Provider;
  backend: BackendChoice;
  prepare?: PrepareOptions;
  pgd?: PgdEvalConfig;
  square?: SquareConfig;
  autoattack?: AutoAttackConfig;
  /** with autoattack: write, per evaluated image, the input that decided its verdict (.npy, float32) */
  saveAdversarial?: string;
  /** with autoattack: write a RobustBench-style model entry (JSON) */
  robustbench?: string;
  ibp?: { eps: number };
  /** CROWN verified accuracy; `neurons`: the largest ReLU layer (per example) that gets its own CROWN pass */
  crown?: { eps: number; neurons: number; alpha?: { steps: number; lr: number } };
  smoothing?: SmoothingConfig & { radii: number[]; mode: 'certify' | 'predict' | 'both' };
  seed: number;
  quiet: boolean;
  /** the model expects (x − mean)/std: put in front of it (the verdict is on the file plus this) */
  normalize?: { mean?: number[]; std?: number[] };
  log?: (s: string) => void;
  /** measure MACs, parameters and onnxruntime latency at batch 1 and `batch` (threads: 0 = one per core) */
  latency?: { batch: number; threads: number };
}

interface Timed { seconds: number; images_per_second: number }
export interface VerifyReport {
  command: 'verify';
  model: { file: string; sha256: string; bytes: number; quantized: boolean; opset: number };
  data: { spec: string; split: string; n: number; image_shape: number[]; classes: number };
  engine?: string;
  provider: Provider;
  seed: number;
  benign: { acc: number; correct: number } & Timed;
  pgd?: { acc: number; settings: PgdEvalConfig; candidates: number; ort_tfjs_disagreements: number; disagreement_rate: number; engine_steps: number; early_stopping: string } & Timed;
  square?: { acc: number; settings: SquareConfig; queries: number; mean_queries: number } & Timed;
  autoattack?: AutoAttackResult & Timed & { saved_adversarial?: string };
  /** the RobustBench-style entry written (--robustbench) */
  robustbench?: string;
  robust?: { acc: number; attacks: string[]; note: string };
  ibp?: { verified_acc: number; eps: number; verified: number; broken_by_attack: number; method: string } & Timed;
  crown?: {
    verified_acc: number; eps: number; verified: number; broken_by_attack: number; method: string;
    /** ReLU layers whose pre-activation bounds came from their own CROWN pass, and those left with IBP's (too many neurons) */
    relu_layers: { crown: number; ibp: number };
    /** α-CROWN: Adam steps on the ReLU lower slopes */
    alpha_steps?: number;
    /** examples CROWN verifies and IBP does not (when both ran) */
    gained_over_ibp?: number;
  } & Timed;
  smoothing?: {
    settings: SmoothingConfig; certified: { radius: number; acc: number }[]; abstain_rate: number; mean_radius_correct: number;
    predict?: { acc: number; abstain_rate: number };
  } & Timed;
  /** what the file costs to run: MACs and parameters of its (float) graph, onnxruntime latency */
  cost?: { macs: number; params: number; prunable_zeros: number; latency: LatencyResult };
  warnings: string[];
  seconds: number;
}

const rate = (n: number, s: number): number => (s > 0 ? n / s : 0);

export async function verifyModel(o: VerifyOptions): Promise<VerifyReport> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const bytes = fs.readFileSync(o.model);
  const hash = sha256(bytes);
  const model = withInputNormalization(loadModel(new Uint8Array(bytes)), o.normalize?.mean, o.normalize?.std);
  const ortSource: string | Uint8Array = o.normalize ? encodeModel(model) : o.model;
  const stripped = stripQdq(model);
  const inputs = realInputs(model.proto.graph!);
  if (inputs.length !== 1) throw new UserError(`${o.model}: expected a classifier with one input, the model has ${inputs.length}`);
  const declared = declaredShape(inputs[0]!) ?? [];
  const d = o.data;
  const n = Math.min(o.limit ?? d.length, d.length);
  if (n < 1) throw new UserError('--limit must be ≥ 1');
  if ((o.saveAdversarial || o.robustbench) && !o.autoattack) throw new UserError(`--${o.saveAdversarial ? 'save-adversarial' : 'robustbench'} needs --autoattack (it records the AutoAttack verdict)`);
  const per = d.shape[0] * d.shape[1] * d.shape[2];
  const x = d.x.subarray(0, n * per);
  const y = d.y.subarray(0, n);
  checkDataFitsModel(d, declared.length === 4 ? declared : ['N', ...d.shape]);

  const clf = await OrtClassifier.open(ortSource, [...d.shape], undefined, { provider: o.provider, maxBatch: o.batch, probe: x.subarray(0, per) }).catch((e: Error) => {
    throw new UserError(`${o.model}: ${e.message}`);
  });
  const classes = clf.classes;
  try {
    checkDataFitsModel(d, ['N', ...d.shape], classes);
  } catch (e) {
    await clf.release();
    throw e;
  }
  const warnings: string[] = [];
  const report: VerifyReport = {
    command: 'verify',
    model: { file: o.model, sha256: hash, bytes: bytes.length, quantized: stripped.quantized, opset: model.opset },
    data: { spec: o.dataSpec, split: 'test', n, image_shape: [...d.shape], classes },
    provider: clf.provider,
    seed: o.seed,
    benign: { acc: 0, correct: 0, seconds: 0, images_per_second: 0 },
    warnings,
    seconds: 0,
  };
  try {
    // benign
    let t = performance.now();
    const correct = new Uint8Array(n);
    const bar = progressBar('benign', n, { quiet: o.quiet });
    for (let s = 0; s < n; s += o.batch) {
      const m = Math.min(o.batch, n - s);
      const p = await clf.predict(x.subarray(s * per, (s + m) * per), m);
      for (let r = 0; r < m; r++) if (p[r] === y[s + r]) correct[s + r] = 1;
      bar.update(s + m);
    }
    bar.stop();
    let sec = (performance.now() - t) / 1000;
    const nCorrect = correct.reduce((a, v) => a + v, 0);
    report.benign = { acc: nCorrect / n, correct: nCorrect, seconds: sec, images_per_second: rate(n, sec) };
    log(`benign accuracy ${(100 * report.benign.acc).toFixed(2)}% (${nCorrect}/${n})`);

    // the float graph for gradients and bounds (QDQ: dequantised weights, straight-through activations)
    let graph: TfGraph | undefined;
    let net: Net | undefined;
    if (o.pgd || o.ibp || o.crown || o.autoattack) {
      graph = TfGraph.fromModel(stripped.model, o.prepare);
      if (o.pgd || o.autoattack) {
        net = new Net(graph, selectEngine(o.backend));
        report.engine = net.describe();
      }
    }
    const attacked: string[] = [];
    const robust = correct.slice();
    let ibpVerified: Uint8Array | undefined;
    /** verified examples that are misclassified, or broken by the attacks when all of them stay in the certified L∞ ball */
    const brokenVerified = (v: Uint8Array, eps: number): number => {
      const attacks = [o.pgd, o.square, o.autoattack].filter((c): c is NonNullable<typeof c> => !!c);
      const inBall = attacks.length > 0 && attacks.every((c) => (c.norm ?? 'linf') === 'linf' && c.eps <= eps);
      let broken = 0;
      for (let i = 0; i < n; i++) if (v[i] && (!correct[i] || (inBall && !robust[i]))) broken++;
      return broken;
    };
    try {
      if (o.pgd && net) {
        t = performance.now();
        const c = o.pgd;
        const f = net.frozen();
        const rng = makeRng(`${o.seed}:verify-pgd`);
        const alive = correct.slice();
        const pb = progressBar(`PGD-${c.steps}`, n, { quiet: o.quiet });
        const st = await pgdVerify(f, clf, x, y, n, alive, c, rng, {
          batch: o.batch,
          onProgress: (done) => pb.update(done),
        });
        pb.stop();
        sec = (performance.now() - t) / 1000;
        const acc = alive.reduce((a, v) => a + v, 0) / n;
        report.pgd = {
          acc, settings: c, candidates: st.candidates, ort_tfjs_disagreements: st.disagreements, disagreement_rate: st.candidates ? st.disagreements / st.candidates : 0,
          engine_steps: st.engine_steps,
          early_stopping: 'only examples onnxruntime classifies correctly are attacked; an example stops when onnxruntime misclassifies one of its iterates (the engine flags them, every final iterate is checked)',
          seconds: sec, images_per_second: rate(n, sec),
        };
        for (let i = 0; i < n; i++) robust[i] &= alive[i]!;
        report.engine = net.describe(); // (names the per-op fallback when the compiled engine gave up)
        attacked.push(`PGD-${c.steps}`);
        log(`PGD-${c.steps} accuracy ${(100 * acc).toFixed(2)}%`);
        if (st.disagreements > 0.05 * st.candidates && st.candidates > 20) {
          warnings.push(`onnxruntime and onnx-hydra's graph disagree on ${((100 * st.disagreements) / st.candidates).toFixed(1)}% of the PGD candidates${stripped.quantized ? ' (expected for an int8 model: gradients come from its float graph)' : ''}`);
        }
      }
      if (o.square) {
        t = performance.now();
        const alive = correct.slice();
        const sb = progressBar(`Square-${o.square.queries}`, o.square.queries, { quiet: o.quiet });
        const q = await squareAttack(clf, x, y, n, d.shape, alive, o.square, makeRng(`${o.seed}:verify-square`), sb);
        sb.stop();
        sec = (performance.now() - t) / 1000;
        const acc = alive.reduce((a, v) => a + v, 0) / n;
        report.square = { acc, settings: o.square, queries: q, mean_queries: q / Math.max(1, nCorrect), seconds: sec, images_per_second: rate(n, sec) };
        for (let i = 0; i < n; i++) robust[i] &= alive[i]!;
        attacked.push(`Square-${o.square.queries}`);
        log(`Square accuracy ${(100 * acc).toFixed(2)}%`);
        if (report.pgd && acc < report.pgd.acc) {
          warnings.push(`the black-box Square attack (${(100 * acc).toFixed(2)}%) beat white-box PGD (${(100 * report.pgd.acc).toFixed(2)}%): the float graph's gradients may be masked or may not transfer to this artifact`);
        }
      }
      if (o.autoattack && net) {
        t = performance.now();
        const c = o.autoattack;
        const aa = await autoAttack(net.frozen(), clf, x, y, n, d.shape, correct, c, { batch: o.batch, seed: o.seed, quiet: o.quiet });
        report.engine = net.describe();
        sec = (performance.now() - t) / 1000;
        report.autoattack = { ...aa.result, seconds: sec, images_per_second: rate(n, sec) };
        for (let i = 0; i < n; i++) robust[i] &= aa.robust[i]!;
        attacked.push(`AutoAttack-${c.version}`);
        log(`AutoAttack (${c.version}) accuracy ${(100 * aa.result.acc).toFixed(2)}%`);
        if (o.saveAdversarial) {
          writeFileAtomic(o.saveAdversarial, encodeNpyFloat32(aa.adversarial, [n, ...clf.inputShape]));
          report.autoattack.saved_adversarial = o.saveAdversarial;
        }
        if (o.robustbench) {
          const entry = robustBenchEntry({ model, file: o.model, sha256: hash, dataset: o.dataSpec, n, cleanAcc: report.benign.acc, aa: aa.result });
          writeFileAtomic(o.robustbench, `${JSON.stringify(entry, null, 2)}\n`);
          report.robustbench = o.robustbench;
        }
        const disagree = aa.result.ort_engine_disagreements;
        if (disagree > 0.05 * aa.result.candidates && aa.result.candidates > 20) {
          warnings.push(`onnxruntime and onnx-hydra's graph disagree on ${((100 * disagree) / aa.result.candidates).toFixed(1)}% of the AutoAttack candidates${stripped.quantized ? ' (expected for an int8 model: gradients come from its float graph)' : ''}`);
        }
        const sq = aa.result.per_attack.find((r) => r.attack === 'Square');
        if (sq && sq.broken > 0) warnings.push(`the black-box Square attack broke ${sq.broken} examples the gradient attacks of AutoAttack left robust: the float graph's gradients may be masked or may not transfer to this artifact`);
      }
      if (attacked.length) {
        report.robust = {
          acc: robust.reduce((a, v) => a + v, 0) / n, attacks: attacked,
          note: 'an example counts as robust only if onnxruntime classifies it correctly under every attack (per-example worst case, ≤ the minimum of the attacks\' accuracies)',
        };
      }
      if (o.ibp && graph) {
        t = performance.now();
        const ib = progressBar('IBP', n, { quiet: o.quiet });
        const lower = await marginLowerBounds(graph, x, y, n, o.ibp.eps, { batch: o.batch, provider: o.provider, bar: ib });
        ib.stop();
        const v = verifiedFlags(lower, y, n, classes);
        ibpVerified = v;
        const broken = brokenVerified(v, o.ibp.eps);
        sec = (performance.now() - t) / 1000;
        const verified = v.reduce((a, b) => a + b, 0);
        report.ibp = {
          verified_acc: verified / n, eps: o.ibp.eps, verified, broken_by_attack: broken,
          method: 'interval bound propagation, class differences folded into the last linear layer, input box clipped to [0,1]',
          seconds: sec, images_per_second: rate(n, sec),
        };
        if (stripped.quantized) warnings.push('IBP bounds are computed on the float graph of this int8 model (dequantised weights, no activation rounding); they are not a proof for the integer kernels');
        if (broken) warnings.push(`${broken} examples verified by IBP were misclassified or broken by an attack: the bounds are unsound for this model, please report it`);
        log(`IBP verified accuracy ${(100 * report.ibp.verified_acc).toFixed(2)}% at ε ${o.ibp.eps}`);
      }
      if (o.crown && graph) {
        t = performance.now();
        const cb = progressBar('CROWN', n, { quiet: o.quiet });
        const layers = { crown: 0, ibp: 0 };
        const lower = await marginLowerBounds(graph, x, y, n, o.crown.eps, { batch: o.batch, provider: o.provider, bar: cb, crown: { neurons: o.crown.neurons, alpha: o.crown.alpha }, layers });
        cb.stop();
        const v = verifiedFlags(lower, y, n, classes);
        const broken = brokenVerified(v, o.crown.eps);
        sec = (performance.now() - t) / 1000;
        const verified = v.reduce((a, b) => a + b, 0);
        let gained: number | undefined;
        if (ibpVerified && o.ibp!.eps === o.crown.eps) {
          gained = 0;
          for (let i = 0; i < n; i++) if (v[i] && !ibpVerified[i]) gained++;
        }
        report.crown = {
          verified_acc: verified / n, eps: o.crown.eps, verified, broken_by_attack: broken,
          method: `${o.crown.alpha ? `α-CROWN (slopes of unstable ReLUs optimised by ${o.crown.alpha.steps} Adam steps on the unverified margins, the best bound of every step kept) over ` : ''}CROWN (backward linear bounds, adaptive ReLU lower slopes, class differences in the specification; the margin bound is the larger of CROWN's and IBP's), input box clipped to [0,1]; ReLU layers up to ${o.crown.neurons} neurons per example get their own CROWN pass, larger ones IBP bounds`,
          relu_layers: layers, ...(o.crown.alpha ? { alpha_steps: o.crown.alpha.steps } : {}), ...(gained !== undefined ? { gained_over_ibp: gained } : {}),
          seconds: sec, images_per_second: rate(n, sec),
        };
        if (stripped.quantized) warnings.push('CROWN bounds are computed on the float graph of this int8 model (dequantised weights, no activation rounding); they are not a proof for the integer kernels');
        if (broken) warnings.push(`${broken} examples verified by CROWN were misclassified or broken by an attack: the bounds are unsound for this model, please report it`);
        log(`CROWN verified accuracy ${(100 * report.crown.verified_acc).toFixed(2)}% at ε ${o.crown.eps}`);
      }
    } finally {
      net?.dispose();
      if (!net) graph?.dispose();
    }

    if (o.smoothing) {
      t = performance.now();
      const c = o.smoothing;
      const rng = makeRng(`${o.seed}:verify-smoothing`);
      const radii = c.radii;
      const cert = new Array(radii.length).fill(0);
      let abstain = 0;
      let sumRadius = 0;
      let certCorrect = 0;
      let pCorrect = 0;
      let pAbstain = 0;
      const sbar = progressBar(`smoothing σ ${c.sigma}`, n, { quiet: o.quiet });
      // noise is drawn in a worker thread while onnxruntime classifies the previous batch, in a session of
      // its own that does not spin (measured on 2 cores, fashion_cnn, batch 1000: the worker + 2 ORT threads
      // 16.5 img/s, + 2 spinning threads 15.9, inline noise + 2 threads 16.1, the worker + 1 ORT thread 10.8)
      const noise = new NoiseSource();
      const sclf = noise.threaded && clf.provider === 'cpu'
        ? await OrtClassifier.open(ortSource, [...d.shape], classes, { provider: 'cpu', maxBatch: c.batch, spin: false })
        : clf;
      try {
        for (let i = 0; i < n; i++) {
          const xi = x.subarray(i * per, (i + 1) * per);
          if (c.mode !== 'predict') {
            const r = await certify(sclf, xi, c, rng, noise);
            if (r.prediction === ABSTAIN) abstain++;
            else if (r.prediction === y[i]) {
              certCorrect++;
              sumRadius += r.radius;
              radii.forEach((rad, j) => r.radius >= rad && cert[j]++);
            }
          }
          if (c.mode !== 'certify') {
            const p = await predictSmoothed(sclf, xi, c, rng, noise);
            if (p === ABSTAIN) pAbstain++;
            else if (p === y[i]) pCorrect++;
          }
          sbar.update(i + 1, c.mode !== 'predict' ? { certified: cert[0] / (i + 1) } : { acc: pCorrect / (i + 1) });
        }
      } finally {
        await noise.close();
        if (sclf !== clf) await sclf.release();
      }
      sbar.stop();
      sec = (performance.now() - t) / 1000;
      const { radii: _r, mode: _m, ...settings } = c;
      report.smoothing = {
        settings,
        certified: c.mode !== 'predict' ? radii.map((radius, j) => ({ radius, acc: cert[j] / n })) : [],
        abstain_rate: abstain / n,
        mean_radius_correct: certCorrect ? sumRadius / certCorrect : 0,
        ...(c.mode !== 'certify' ? { predict: { acc: pCorrect / n, abstain_rate: pAbstain / n } } : {}),
        seconds: sec, images_per_second: rate(n, sec),
      };
    }
  } finally {
    await clf.release();
  }
  if (o.latency) {
    // after every other measurement, with the attack sessions released: nothing else competes for the cores
    const summary = summarize(stripped.model, o.prepare);
    const lat = await measureLatency(ortSource, [...d.shape], { batch: o.latency.batch, threads: o.latency.threads, provider: o.provider });
    report.cost = { macs: summary.macs ?? 0, params: summary.parameters.total, prunable_zeros: summary.parameters.prunable_zeros, latency: lat };
    log(`latency: batch 1 ${lat.batch1.median_ms.toFixed(3)} ms (p90 ${lat.batch1.p90_ms.toFixed(3)}), batch ${lat.batchN.batch} ${lat.batchN.images_per_second.toFixed(0)} img/s`);
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}
