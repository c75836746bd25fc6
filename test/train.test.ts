// Attacks, objectives, optimizer, checkpoints and resume, on the real small CNN export and real Fashion-MNIST.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { tf } from '../src/tfjs/tf.js';
import { selectEngine } from '../src/engine/select.js';
import { loadModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { Net, type Frozen } from '../src/engine/net.js';
import { loadData, slice } from '../src/data/index.js';
import { oneHot, pgdAttack, tradesAttack, softmaxRows, type PgdConfig } from '../src/train/attacks.js';
import { DEFAULT_OBJECTIVE, makeObjective, rampAt } from '../src/train/objectives.js';
import { Optimizer, learningRate } from '../src/train/optim.js';
import { trainLoop, type TrainConfig } from '../src/train/trainer.js';
import { makeRng } from '../src/util/rng.js';
import { BakeChoice, PassBakeChoice } from '../src/engine/compile/bake-choice.js';

const engine = selectEngine('ort');
const data = loadData('fashion-mnist');
const n = 32;
const per = 28 * 28;
const x = data.test.x.slice(0, n * per);
const y = data.test.y.slice(0, n);

function ce(z: Float32Array, labels: Int32Array, k: number): number {
  const p = softmaxRows(z, k);
  let s = 0;
  for (let i = 0; i < labels.length; i++) s -= Math.log(Math.max(1e-12, p[i * k + labels[i]!]!));
  return s / labels.length;
}
function kl(zp: Float32Array, zq: Float32Array, k: number): number {
  const p = softmaxRows(zp, k);
  const q = softmaxRows(zq, k);
  let s = 0;
  for (let i = 0; i < p.length; i++) if (p[i]! > 0) s += p[i]! * Math.log(p[i]! / Math.max(1e-12, q[i]!));
  return s / (p.length / k);
}
function checkBall(adv: Float32Array, eps: number, norm: 'linf' | 'l2'): void {
  for (let e = 0; e < n; e++) {
    let s = 0;
    let m = 0;
    for (let i = e * per; i < (e + 1) * per; i++) {
      assert.ok(adv[i]! >= 0 && adv[i]! <= 1, `pixel ${adv[i]} outside [0,1]`);
      const d = adv[i]! - x[i]!;
      s += d * d;
      m = Math.max(m, Math.abs(d));
    }
    if (norm === 'linf') assert.ok(m <= eps + 1e-6, `L∞ distance ${m} > ε ${eps}`);
    else assert.ok(Math.sqrt(s) <= eps * (1 + 1e-4), `L2 distance ${Math.sqrt(s)} > ε ${eps}`);
  }
}

// a briefly trained network (attacks on a random one prove little)
const g = TfGraph.fromModel(loadModel('models/small_cnn.onnx'));
const net = new Net(g, engine);
const tfOnly = new Net(g, { ...engine, kind: 'cpu', description: 'tfjs cpu' });

test('natural training on 2,048 real images reaches > 60% test accuracy', async () => {
  const vars = new Map(g.trainableNames().map((k) => [k, g.variables.get(k)!]));
  const r = await trainLoop(net, data, makeObjective({ ...DEFAULT_OBJECTIVE, kind: 'natural' }), { vars }, {
    epochs: 1, batchSize: 64, optimizer: { name: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 0 }, schedule: { kind: 'constant', warmup: 0, milestones: [], gamma: 0.1 },
    seed: 1, augment: { cropPad: 0, flip: false }, trainLimit: 2048, evalLimit: 1000, resume: false, label: 'test', quiet: true,
  });
  assert.ok(r.history[0]!.test_acc! > 0.6, `test accuracy ${r.history[0]!.test_acc}`);
});

for (const norm of ['linf', 'l2'] as const) {
  for (const [label, frozen] of [['fused onnxruntime', () => net.frozen()], ['tfjs', () => tfOnly.frozen()]] as [string, () => Frozen][]) {
    test(`PGD and TRADES attacks (${norm}, ${label}): inside the ε-ball and [0,1], and raise their loss`, () => {
      const f = frozen();
      const eps = norm === 'linf' ? 0.1 : 1.5;
      const cfg: PgdConfig = { eps, alpha: (2.5 * eps) / 10, steps: 10, norm, randomStart: true };
      const z0 = f.logits(x, n);
      const adv = pgdAttack(f, x, y, n, 10, cfg, makeRng('pgd'));
      checkBall(adv, eps, norm);
      const lossClean = ce(z0, y, 10);
      const lossAdv = ce(f.logits(adv, n), y, 10);
      assert.ok(lossAdv > lossClean + 0.1, `PGD: loss ${lossClean} → ${lossAdv}`);
      const tr = tradesAttack(f, x, n, 10, cfg, makeRng('trades'));
      checkBall(tr, eps, norm);
      const k = kl(z0, f.logits(tr, n), 10);
      assert.ok(k > 0.05, `TRADES: KL(clean ‖ adversarial) ${k}`);
    });
  }
}

test('fused and tfjs attacks agree step for step (no random start)', () => {
  const cfg: PgdConfig = { eps: 0.05, alpha: 0.01, steps: 3, norm: 'linf', randomStart: false };
  const a = pgdAttack(net.frozen(), x, y, n, 10, cfg, makeRng(1));
  const b = pgdAttack(tfOnly.frozen(), x, y, n, 10, cfg, makeRng(1));
  let diff = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i]! - b[i]!) > 1e-5) diff++;
  // a sign can flip where the gradient is ~0: allow a handful of pixels
  assert.ok(diff / a.length < 1e-3, `${diff} of ${a.length} pixels differ`);
});

/** Force the engine's baked/fed weight choice (HYDRA_BAKE) for the rest of test `t`, restored after it. */
function forceBake(t: { after(fn: () => void): void }): (bake: '0' | '1') => void {
  const saved = process.env.HYDRA_BAKE;
  t.after(() => (saved === undefined ? delete process.env.HYDRA_BAKE : (process.env.HYDRA_BAKE = saved)));
  return (bake) => (process.env.HYDRA_BAKE = bake);
}

for (const [file, what] of [['models/small_cnn.onnx', 'small CNN'], ['models/resnet_small.onnx', 'ResNet, BatchNormalization folded into the convolutions when fed']]) test(`attack sessions with the weights baked in and with the weights fed compute the same (${what})`, (t) => {
  const setBake = forceBake(t);
  const model = file === 'models/small_cnn.onnx' ? g : TfGraph.fromModel(loadModel(file));
  const run = (bake: '0' | '1') => {
    setBake(bake);
    const other = new Net(model, engine);
    const f = other.frozen();
    const z = f.logits(x, n);
    const { grad } = f.lossGrad(x, n, { kind: 'ce', labels: y });
    const step = f.pgdStep(x, x, n, oneHot(y, 10), 0.01, 0.05, 'l2').next;
    other.dispose();
    return { z, grad, step };
  };
  const baked = run('1');
  const fed = run('0');
  for (const k of ['z', 'grad', 'step'] as const) {
    const scale = baked[k].reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const err = baked[k].reduce((m, v, i) => Math.max(m, Math.abs(v - fed[k][i]!)), 0);
    assert.ok(err <= 1e-4 * scale, `${k}: baked and fed differ by ${err} (largest ${scale})`);
  }
});

test('the attack sessions’ bake choice: the cheaper way per weight set, and a baked choice dropped when its later sets cost more than feeding', () => {
  /** one weight set of `calls` calls: a baked session's making and call times, or a fed set's prep and call times */
  const weightSet = (c: BakeChoice, calls: number, baked: { make: number; call: number }, fed: { prep: number; call: number }): boolean => {
    const bakes = c.nextBakes();
    const call = bakes ? baked.call : fed.call;
    if (bakes) c.made(baked.make);
    else c.prepped(fed.prep);
    for (let i = 0; i < calls; i++) c.called(bakes, call);
    c.released(bakes, calls, bakes ? baked.make + calls * call : 0);
    return bakes;
  };
  // 10 calls per set (a TRADES step): baked 90 + 10·100 = 1090 ms, fed 60 + 10·95 = 1010 ms: two sets each way, then fed
  const feed = new BakeChoice();
  const trades = [0, 1, 2, 3, 4].map(() => weightSet(feed, 10, { make: 90, call: 100 }, { prep: 60, call: 95 }));
  assert.deepEqual(trades, [true, true, false, false, false]);
  assert.equal(feed.choice, false);
  // 1000 calls per set (an evaluation), baked calls 1 ms faster: baked, and it stays while that holds
  const bake = new BakeChoice();
  const cheap = { make: 90, call: 10 };
  const fed = { prep: 60, call: 11 };
  for (let i = 0; i < 4; i++) weightSet(bake, 1000, cheap, fed);
  assert.equal(bake.choice, true);
  for (let i = 0; i < 5; i++) assert.equal(weightSet(bake, 1000, cheap, fed), true);
  assert.equal(bake.choice, true);
  // later sessions take 1.5 s to make: 11,500 ms per set against feeding's estimated 60 + 1000·11 = 11,060.
  // Judged on the last 3 sets together: with one cheap set among them (10,090) baking still wins, then not
  const slow = { make: 1500, call: 10 };
  weightSet(bake, 1000, slow, fed);
  weightSet(bake, 1000, slow, fed);
  assert.equal(bake.choice, true, 'the last 3 sets still include a cheap one');
  weightSet(bake, 1000, slow, fed);
  assert.equal(bake.choice, false);
  assert.equal(weightSet(bake, 1000, slow, fed), false);
});

test('the training passes’ bake choice: 3 passes each way, and a baked choice dropped when its last 3 passes are slower (median) than the fastest fed one', () => {
  const c = new PassBakeChoice();
  // alternating; the first pass of each way compiled its template and is not compared: fastest baked 20 ms,
  // fed 25 (a warm-up pass of 60 ms does not count against feeding)
  const times = { baked: [90, 20, 22], fed: [80, 60, 25] };
  const order: boolean[] = [];
  for (let i = 0; i < 6; i++) {
    const bakes = c.nextBakes();
    order.push(bakes);
    c.passed(bakes, times[bakes ? 'baked' : 'fed'].shift()!);
  }
  assert.deepEqual(order, [true, false, true, false, true, false]);
  assert.equal(c.choice, true);
  // later baked passes slow down (session making grew): fed once the median of the last 3 is above 25 ms
  for (const ms of [24, 24, 26]) c.passed(c.nextBakes(), ms);
  assert.equal(c.choice, true, 'median of the last 3: 24 ms');
  c.passed(c.nextBakes(), 30);
  assert.equal(c.choice, false);
  assert.equal(c.nextBakes(), false);
  // fastest against fastest: fed 20 ms beats baked 24 although a warm-up pass makes fed's mean 40
  const warm = new PassBakeChoice();
  const warmTimes = { baked: [90, 24, 24], fed: [80, 60, 20] };
  for (let i = 0; i < 6; i++) {
    const bakes = warm.nextBakes();
    warm.passed(bakes, warmTimes[bakes ? 'baked' : 'fed'].shift()!);
  }
  assert.equal(warm.choice, false);
});

test('SGD (with and without Nesterov) and Adam follow PyTorch’s update rules, in the SIMD lanes and the tail', () => {
  // 7 weights: one 4-lane SIMD block and 3 left over; three steps each, against the formulas in float64
  const n = 7;
  const w0 = Array.from({ length: n }, (_, i) => Math.sin(i + 1));
  const grads = [0, 1, 2].map((s) => Array.from({ length: n }, (_, i) => Math.cos(3 * i + s) * (i % 2 ? 1 : -0.5)));
  const close = (got: Float32Array, want: number[], what: string): void =>
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-5 * Math.max(1, Math.abs(want[i]!)), `${what}: ${Array.from(got)} vs ${want}`));
  for (const nesterov of [false, true]) {
    const w = tf.variable(tf.tensor1d(w0));
    const opt = new Optimizer({ name: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov });
    let ref = w0.slice();
    let buf: number[] = [];
    grads.forEach((gr, step) => {
      if (step === 2) {
        // the variable given another value between steps (HYDRA's masks do): the update starts from it
        ref = ref.map((v, i) => (i % 3 ? v : 0));
        w.assign(tf.tensor1d(ref));
      }
      opt.apply(new Map([['w', w]]), { w: tf.tensor1d(gr) }, 0.1);
      // torch.optim.SGD: d = g + wd·w; buf = d (first step) or momentum·buf + d; step = buf or d + momentum·buf
      const d = gr.map((v, i) => v + 0.01 * ref[i]!);
      buf = step === 0 ? d : buf.map((v, i) => 0.9 * v + d[i]!);
      ref = ref.map((v, i) => v - 0.1 * (nesterov ? d[i]! + 0.9 * buf[i]! : buf[i]!));
    });
    close(w.dataSync() as Float32Array, ref, `sgd nesterov=${nesterov}`);
    // the state survives a checkpoint: a new optimizer loaded with it takes the same next step
    const again = new Optimizer({ name: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov });
    again.load(opt.state());
    const w2 = tf.variable(tf.tensor1d(Array.from(w.dataSync())));
    opt.apply(new Map([['w', w]]), { w: tf.tensor1d(grads[0]!) }, 0.1);
    again.apply(new Map([['w', w2]]), { w: tf.tensor1d(grads[0]!) }, 0.1);
    assert.deepEqual(Array.from(w2.dataSync()), Array.from(w.dataSync()));
  }
  const a = tf.variable(tf.tensor1d(w0));
  const adam = new Optimizer({ name: 'adam', lr: 0.01, momentum: 0, weightDecay: 0.001 });
  let ref = w0.slice();
  let m = new Array<number>(n).fill(0);
  let v = new Array<number>(n).fill(0);
  grads.forEach((gr, step) => {
    adam.apply(new Map([['a', a]]), { a: tf.tensor1d(gr) }, 0.01);
    const d = gr.map((g, i) => g + 0.001 * ref[i]!);
    m = m.map((x, i) => 0.9 * x + 0.1 * d[i]!);
    v = v.map((x, i) => 0.999 * x + 0.001 * d[i]! ** 2);
    const c1 = 1 - 0.9 ** (step + 1);
    const c2 = 1 - 0.999 ** (step + 1);
    ref = ref.map((x, i) => x - (0.01 * (m[i]! / c1)) / (Math.sqrt(v[i]! / c2) + 1e-8));
  });
  close(a.dataSync() as Float32Array, ref, 'adam');
});

test('schedules: cosine, step, linear warm-up; ε/κ ramps', () => {
  const s = { warmup: 0, milestones: [2, 4], gamma: 0.1 };
  assert.equal(learningRate(1, { ...s, kind: 'cosine' }, 0, 10), 1);
  assert.ok(Math.abs(learningRate(1, { ...s, kind: 'cosine' }, 5, 10) - 0.5) < 1e-9);
  assert.ok(Math.abs(learningRate(1, { ...s, kind: 'step' }, 4.5, 10) - 0.01) < 1e-12);
  assert.ok(learningRate(1, { ...s, kind: 'constant', warmup: 2 }, 1, 10) < 0.6);
  const c = { ...DEFAULT_OBJECTIVE, eps: 0.2, epsWarmup: 0.1, epsRamp: 0.5, kappaStart: 1, kappaEnd: 0.5 };
  assert.equal(rampAt(c, 0.05).eps, 0);
  assert.ok(Math.abs(rampAt(c, 0.35).eps - 0.1) < 1e-12 && Math.abs(rampAt(c, 0.35).kappa - 0.75) < 1e-12);
  assert.equal(rampAt(c, 0.9).eps, 0.2);
});

test('an interrupted run resumed from its checkpoint ends with the same weights as an uninterrupted one', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-resume-'));
  const small = { train: slice(data.train, 0, 512), test: slice(data.test, 0, 256) };
  const run = async (stopAfter: number | undefined, resume: boolean, ckpt: string): Promise<{ w: Float32Array[]; resumedFrom?: number; epochs: number }> => {
    const gg = TfGraph.fromModel(loadModel('models/small_cnn.onnx'));
    const nn = new Net(gg, engine);
    const vars = new Map(gg.trainableNames().map((k) => [k, gg.variables.get(k)!]));
    const cfg: TrainConfig = {
      epochs: 3, stopAfterEpoch: stopAfter, batchSize: 64, optimizer: { name: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-4 }, schedule: { kind: 'cosine', warmup: 0, milestones: [], gamma: 0.1 },
      seed: 3, augment: { cropPad: 2, flip: true }, evalLimit: 0, checkpointDir: ckpt, resume, label: 'resume-test', quiet: true,
    };
    const r = await trainLoop(nn, small, makeObjective({ ...DEFAULT_OBJECTIVE, kind: 'trades', steps: 2, alpha: 0.05 }), { vars }, cfg);
    const w = [...vars.values()].map((v) => v.dataSync().slice() as Float32Array);
    nn.dispose();
    gg.dispose();
    return { w, resumedFrom: r.resumedFrom, epochs: r.history.length };
  };
  // the engine picks baked or fed weights per configuration by timing, and the two round differently:
  // fixed here, so the three runs compute alike whatever the machine's load
  forceBake(t)('0');
  const full = await run(undefined, false, path.join(dir, 'a'));
  // stop after epoch 1 (as if killed), then resume
  const first = await run(1, false, path.join(dir, 'b'));
  assert.equal(first.epochs, 1);
  const resumed = await run(undefined, true, path.join(dir, 'b'));
  assert.equal(resumed.resumedFrom, 0, 'resumed after epoch 1');
  assert.equal(resumed.epochs, 3, 'history of all 3 epochs');
  full.w.forEach((w, i) => {
    let d = 0;
    let scale = 0;
    for (let j = 0; j < w.length; j++) {
      d = Math.max(d, Math.abs(w[j]! - resumed.w[i]![j]!));
      scale = Math.max(scale, Math.abs(w[j]!));
      if (i === 0) assert.notEqual(first.w[i]![j], undefined);
    }
    // equal up to float noise (onnxruntime's multithreaded reductions)
    assert.ok(d < 1e-4 * (1 + scale), `parameter ${i}: max difference ${d}`);
    let moved = 0;
    for (let j = 0; j < w.length; j++) moved = Math.max(moved, Math.abs(w[j]! - first.w[i]![j]!));
    assert.ok(i > 0 || moved > 1e-3, 'epochs 2-3 changed the weights');
  });
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a NaN loss stops training with a message and keeps the last good checkpoint', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-nan-'));
  const gg = TfGraph.fromModel(loadModel('models/small_cnn.onnx'));
  const nn = new Net(gg, engine);
  const vars = new Map(gg.trainableNames().map((k) => [k, gg.variables.get(k)!]));
  const small = { train: slice(data.train, 0, 256), test: slice(data.test, 0, 64) };
  await assert.rejects(
    trainLoop(nn, small, makeObjective({ ...DEFAULT_OBJECTIVE, kind: 'natural' }), { vars }, {
      epochs: 4, batchSize: 64, optimizer: { name: 'sgd', lr: 1e6, momentum: 0.9, weightDecay: 0 }, schedule: { kind: 'constant', warmup: 0, milestones: [], gamma: 0.1 },
      seed: 0, augment: { cropPad: 0, flip: false }, evalLimit: 0, checkpointDir: dir, resume: false, label: 'nan', quiet: true,
    }),
    /loss became (NaN|Infinity).*try a lower --lr/,
  );
  for (const v of vars.values()) assert.ok(v.dataSync().every(Number.isFinite), 'weights must stay finite');
  nn.dispose();
  gg.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});
