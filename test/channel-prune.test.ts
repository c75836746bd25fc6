// Channel pruning (`prune --structure channel`): channel HYDRA's straight-through gradient reaches the channel
// scores and never the frozen weights; hydra, lwm and admm exports have the channels physically removed,
// compute the masked network's logits on onnxruntime, pass `check` and quantize to int8; bad input is a
// one-line error before any training; recipes accept `structure: channel`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { tf } from '../src/tfjs/tf.js';
import { selectEngine } from '../src/engine/select.js';
import { Net } from '../src/engine/net.js';
import { loadModel, type OnnxModel } from '../src/onnx/model.js';
import { decodeTensor } from '../src/onnx/tensor.js';
import { PreparedGraph, TfGraph } from '../src/graph/graph.js';
import { countMacs } from '../src/graph/macs.js';
import { loadData, slice } from '../src/data/index.js';
import { DEFAULT_OBJECTIVE, makeObjective } from '../src/train/objectives.js';
import type { TrainConfig } from '../src/train/trainer.js';
import { allocateChannels, channelMaskSTE } from '../src/prune/masks.js';
import { ChannelMasker, planChannels, pruneChannels, unshareInitializers } from '../src/prune/channel-prune.js';
import { channelGroups } from '../src/prune/channels.js';
import { keepLargestNorms } from '../src/prune/shrink.js';
import { parseRecipe } from '../src/pipeline/recipe.js';
import { outputDifference } from '../src/runtime/ort.js';
import { buildModel, encode, floatInit, node } from './helpers/build-model.js';

const BIN = path.resolve('bin/onnx-hydra.js');
const MODEL = 'models/resnet_small.onnx';
const engine = selectEngine('ort');
const data = loadData('fashion-mnist');
const small = { train: slice(data.train, 0, 256), test: slice(data.test, 0, 64) };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-channel-prune-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function run(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function assertOneLineError(r: { code: number; out: string; err: string }, pattern: RegExp): void {
  assert.equal(r.code, 2, `exit code 2 expected, got ${r.code}: ${r.err}`);
  const lines = r.err.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected, got:\n${r.err}`);
  assert.match(lines[0]!, pattern);
}

/** Shared short settings: 256 training images, one epoch per phase, no per-epoch evaluation. */
const SHORT = ['--train-limit', '256', '--batch-size', '64', '--prune-epochs', '1', '--finetune-epochs', '1', '--eval-limit', '0', '--final-eval-limit', '64', '--eval-steps', '0', '--quiet', '--json'];

/** onnxruntime logits of two models on the first `n` test images: the largest |difference| and |logit|. */
async function ortDiff(a: OnnxModel | string, b: OnnxModel | string, n = 64): Promise<{ diff: number; scale: number }> {
  return outputDifference(a, b, { data: data.test.x.slice(0, n * 28 * 28), shape: [n, 1, 28, 28] });
}

const initShape = (m: OnnxModel, name: string): number[] => decodeTensor(m.proto.graph!.initializer!.find((t) => t.name === name)!).shape;
const initData = (m: OnnxModel, name: string): Float32Array => decodeTensor(m.proto.graph!.initializer!.find((t) => t.name === name)!).data as Float32Array;

function cfg(label: string, epochs: number, lr: number): TrainConfig {
  return {
    epochs, batchSize: 64, optimizer: { name: 'sgd', lr, momentum: 0.9, weightDecay: 1e-4 }, schedule: { kind: 'cosine', warmup: 0, milestones: [], gamma: 0.1 },
    seed: 0, augment: { cropPad: 0, flip: false }, evalLimit: 0, resume: false, label, quiet: true,
  };
}

test('channelMaskSTE: forward is the 0/1 mask, backward dL/ds = dL/dm ⊙ sign(s); allocation per group and global', () => {
  const s = tf.variable(tf.tensor1d([0.5, -0.4, 0.1, -0.05]), true, 'channel-score:ste-test');
  const coeff = tf.tensor1d([1, 2, 3, 4]);
  const hard = allocateChannels([s.dataSync() as Float32Array], 0.5, 'layer')[0]!;
  assert.deepEqual(Array.from(hard), [1, 1, 0, 0]);
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(channelMaskSTE(s, hard), coeff)) as tf.Scalar, [s]);
  assert.equal(value.dataSync()[0], 3);
  // removed channels get their gradient too (straight through), through sign(s)
  assert.deepEqual(Array.from(grads[s.name]!.dataSync()), [1, -2, 3, -4]);
  // global: |s| / the group's largest |s| ranked over groups; every group keeps its best channel
  const groups = [Float32Array.of(10, 9, 1, 2), Float32Array.of(0.1, 0.05, 0.001, 0.0001)];
  const flat = (m: Float32Array[]) => m.flatMap((x) => Array.from(x));
  assert.deepEqual(flat(allocateChannels(groups, 0.5, 'global')), [1, 1, 0, 0, 1, 1, 0, 0]);
  assert.deepEqual(flat(allocateChannels(groups, 0.75, 'global')), [1, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(flat(allocateChannels(groups, 0.75, 'layer')), [1, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(flat(allocateChannels([Float32Array.of(3), Float32Array.of(2), Float32Array.of(1)], 0.9, 'global')), [1, 1, 1]);
  s.dispose();
  coeff.dispose();
});

test('channel HYDRA: the straight-through gradient reaches every group\'s scores, removed channels\' included, and the score phase leaves the weights frozen', async () => {
  const graph = TfGraph.fromModel(loadModel(MODEL));
  const net = new Net(graph, engine);
  const plan = planChannels(graph);
  assert.equal(plan.groups.length, 6);
  assert.deepEqual(plan.dense.map((d) => d.reason), ["they are graph output 'logits' (the classes)"]);
  // gradient of the loss of a batch through the masked parameters, with respect to the scores only
  const scores = plan.groups.map((pg, i) => tf.variable(tf.randomUniform([pg.group.channels], 0.1, 1, 'float32', i), true, `channel-score:grad-test:${i}`));
  const hard = allocateChannels(scores.map((s) => s.dataSync() as Float32Array), 0.5, 'layer');
  const masker = new ChannelMasker(graph, plan, 'scoreMasked');
  const x = tf.tensor(small.train.x.slice(0, 32 * 784), [32, 1, 28, 28]);
  const y = tf.oneHot(tf.tensor1d(small.train.y.slice(0, 32), 'int32'), 10);
  // the score phase masks the consumers' input weights: the same function as the masked network (producers masked)
  const producerMasker = new ChannelMasker(graph, plan, 'masked');
  const logitsWith = (m: ChannelMasker): Float32Array => tf.tidy(() => net.logits(x, { training: false, gradX: false, gradParams: false, overrides: m.apply(hard.map((h) => tf.tensor1d(h))) }).logits.dataSync() as Float32Array);
  const [viaConsumers, viaProducers] = [logitsWith(masker), logitsWith(producerMasker)];
  const scale = Math.max(...viaProducers.map(Math.abs));
  viaConsumers.forEach((v, i) => assert.ok(Math.abs(v - viaProducers[i]!) <= 1e-4 * scale, `logit ${i}: consumers masked ${v}, producers masked ${viaProducers[i]}`));
  producerMasker.dispose();
  const { grads } = tf.variableGrads(() => {
    const overrides = masker.apply(scores.map((s, i) => channelMaskSTE(s, hard[i]!)));
    const z = net.logits(x, { training: true, gradX: false, gradParams: true, overrides }).logits;
    return tf.losses.softmaxCrossEntropy(y, z) as tf.Scalar;
  }, scores);
  assert.deepEqual(Object.keys(grads).sort(), scores.map((s) => s.name).sort(), 'gradients for the scores and nothing else');
  scores.forEach((s, i) => {
    const gr = grads[s.name]!.dataSync();
    assert.ok(gr.every(Number.isFinite));
    assert.ok(gr.some((v, c) => hard[i]![c] && v !== 0), `group ${plan.groups[i]!.index}: no gradient reached a kept channel's score`);
    // a removed channel's activation stays alive in the score phase, so its score can still rise back
    assert.ok(gr.some((v, c) => !hard[i]![c] && v !== 0), `group ${plan.groups[i]!.index}: no gradient reached a removed channel's score`);
  });
  masker.dispose();
  for (const s of scores) s.dispose();

  // a score phase (1 epoch, no fine-tuning): weights, biases and BatchNorm scale/shift unchanged except the removed channels' zeros
  const before = new Map(graph.trainableNames().map((n) => [n, graph.variables.get(n)!.dataSync().slice() as Float32Array]));
  const r = await pruneChannels(net, small, makeObjective({ ...DEFAULT_OBJECTIVE, kind: 'natural' }), plan, {
    method: 'hydra', sparsity: 0.5, allocation: 'layer', scoreInit: 'scaled', rho: 0, rhoGrowth: 1, structure: 'irregular',
    prune: cfg('channel-hydra:frozen', 1, 0.1), finetune: cfg('channel-hydra:frozen-ft', 0, 0.01), resume: false, quiet: true,
  });
  assert.deepEqual(r.phases.map((p) => p.name), ['scores']);
  assert.deepEqual(r.keep.map((k) => k.reduce((a, b) => a + b, 0)), [8, 8, 16, 16, 32, 32]);
  let zeroed = 0;
  for (const [n, w0] of before) {
    const w = graph.variables.get(n)!.dataSync();
    const m = r.masks.get(n);
    for (let i = 0; i < w.length; i++) {
      assert.equal(w[i], m && !m[i] ? 0 : w0[i], `${n}[${i}] changed`);
      if (m && !m[i]) zeroed++;
    }
  }
  assert.ok(zeroed > 0);
  // every removed channel: its conv rows and its BatchNorm scale and shift
  assert.ok(r.masks.has('stem.0.weight') && r.masks.has('stem.1.weight') && r.masks.has('stem.1.bias') && !r.masks.has('stem.1.running_mean'));
  net.dispose();
  graph.dispose();
});

test('prune --structure channel --method hydra (TRADES, BatchNorm): shrunk export with fewer channels and MACs, the masked network\'s logits, check passes, int8 runs', async () => {
  const out = path.join(tmp, 'resnet.hydra-channel.onnx');
  const r = run('prune', MODEL, '--structure', 'channel', '--method', 'hydra', '--sparsity', '0.5', '--objective', 'trades', '--steps', '2', '--alpha', '0.05',
    ...SHORT, '--keep-shape', '--quantize', 'int8', '--calibration-size', '64', '--out', out);
  assert.equal(r.code, 0, r.err);
  const rep = JSON.parse(r.out);
  assert.equal(rep.structure, 'channel');
  assert.deepEqual(rep.channels.groups.map((g: { channels: number; kept: number }) => [g.channels, g.kept]), [[16, 8], [16, 8], [32, 16], [32, 16], [64, 32], [64, 32]]);
  assert.deepEqual(rep.channels.dense, [{ producers: ['/fc/Gemm'], channels: 10, reason: "they are graph output 'logits' (the classes)" }]);
  assert.equal(rep.sparsity.sparsity, 0.5);
  assert.ok(rep.channels.masked_vs_shrunk.max_abs_logit_diff <= rep.channels.masked_vs_shrunk.tolerance);
  const { dense, shrunk } = rep.channels.cost;
  assert.ok(shrunk.macs < dense.macs / 3 && shrunk.params < dense.params / 3 && shrunk.bytes < dense.bytes / 3, JSON.stringify(rep.channels.cost));

  // the file: channels physically gone, fewer MACs traced by onnx-hydra itself
  const m = loadModel(out);
  assert.deepEqual(initShape(m, 'stem.0.weight'), [8, 1, 3, 3]);
  assert.deepEqual(initShape(m, 'layer1.conv1.weight'), [8, 8, 3, 3]);
  assert.deepEqual(initShape(m, 'fc.weight'), [10, 32]);
  assert.equal(countMacs(new PreparedGraph(m)).total, shrunk.macs);
  assert.ok(countMacs(new PreparedGraph(m)).total < countMacs(new PreparedGraph(loadModel(MODEL))).total / 3);

  // the masked network (--keep-shape): the input's shapes, removed channels zero, the same logits on onnxruntime
  const masked = loadModel(out.replace(/\.onnx$/, '.masked.onnx'));
  assert.deepEqual(initShape(masked, 'stem.0.weight'), [16, 1, 3, 3]);
  const keptStem = new Set(rep.channels.groups[0].kept_channels as number[]);
  const bnScale = initData(masked, 'stem.1.weight');
  for (let c = 0; c < 16; c++) assert.equal(bnScale[c] === 0, !keptStem.has(c), `stem BatchNorm scale of channel ${c}`);
  const { diff, scale } = await ortDiff(masked, m);
  assert.ok(scale > 0 && diff <= 1e-4 * Math.max(1, scale), `masked vs shrunk: ${diff}`);

  const check = run('check', out);
  assert.equal(check.code, 0, check.err + check.out);
  assert.match(check.out, /OK/);

  // int8 QDQ of the shrunk file: written, loads and runs on onnxruntime, agrees with the float file mostly
  assert.ok(fs.existsSync(rep.int8.file) && rep.int8.bytes < rep.export.bytes);
  assert.ok(rep.int8.agreement_with_float >= 0.8, JSON.stringify(rep.int8));
  const q = await ortDiff(out, rep.int8.file, 8);
  assert.ok(Number.isFinite(q.diff));
});

test('lwm and admm with --structure channel: valid shrunk files; lwm keeps the channels of largest weight norm of the input', async () => {
  for (const method of ['lwm', 'admm']) {
    const out = path.join(tmp, `resnet.${method}-channel.onnx`);
    const r = run('prune', MODEL, '--structure', 'channel', '--method', method, '--sparsity', '0.75', '--objective', 'natural', ...SHORT, '--out', out);
    assert.equal(r.code, 0, r.err);
    const rep = JSON.parse(r.out);
    assert.deepEqual(rep.phases.map((p: { name: string }) => p.name), method === 'lwm' ? ['finetune'] : ['admm', 'finetune']);
    assert.deepEqual(rep.channels.groups.map((g: { kept: number }) => g.kept), [4, 4, 8, 8, 16, 16]);
    assert.ok(rep.channels.masked_vs_shrunk.max_abs_logit_diff <= rep.channels.masked_vs_shrunk.tolerance);
    assert.ok(rep.channels.cost.dense_over_shrunk.macs > 10, JSON.stringify(rep.channels.cost));
    const check = run('check', out);
    assert.equal(check.code, 0, check.err + check.out);
    if (method === 'lwm') {
      const model = loadModel(MODEL);
      const expected = keepLargestNorms(model, channelGroups(model, new PreparedGraph(model)), 0.75);
      assert.deepEqual(rep.channels.groups.map((g: { kept_channels: number[] }) => g.kept_channels), expected);
    }
  }
});

test('bad input is a one-line error before any training: sparsity 0 or 1.2, no prunable group, a sparsity that removes nothing, filter without admm', () => {
  const out = path.join(tmp, 'never.onnx');
  const common = ['--structure', 'channel', '--train-limit', '64', '--out', out];
  assertOneLineError(run('prune', MODEL, '--sparsity', '0', ...common), /--sparsity must be in \(0, 1\) \(the fraction of each group's channels removed\), got 0$/);
  assertOneLineError(run('prune', MODEL, '--sparsity', '1.2', ...common), /--sparsity must be in \(0, 1\).*got 1\.2$/);
  assertOneLineError(run('prune', MODEL, '--sparsity', '0.01', ...common), /--sparsity 0\.01 removes no channel: its groups have 16, 32, 64 channels/);
  assertOneLineError(run('prune', MODEL, '--structure', 'filter', '--method', 'hydra', '--out', out), /--structure filter is ADMM's per-layer filter projection/);
  // a model whose only layer is the output layer: its channels are the classes
  const gemm = path.join(tmp, 'one-gemm.onnx');
  fs.writeFileSync(gemm, encode(buildModel({
    inputs: [{ name: 'x', shape: ['N', 1, 28, 28] }],
    outputs: [{ name: 'logits', shape: ['N', 10] }],
    nodes: [node('Flatten', ['x'], ['f'], {}, 'flatten'), node('Gemm', ['f', 'w', 'b'], ['logits'], { transB: 1 }, 'fc')],
    initializers: [floatInit('w', [10, 784], Array.from({ length: 7840 }, (_, i) => Math.sin(i) / 28)), floatInit('b', [10], new Array(10).fill(0))],
  })));
  const t0 = performance.now();
  assertOneLineError(run('prune', gemm, '--sparsity', '0.5', ...common), /--structure channel: no channel group of '.*one-gemm\.onnx' can be pruned \(fc: they are graph output 'logits' \(the classes\)\)$/);
  assert.ok(performance.now() - t0 < 30_000, 'the error came after training started');
  assert.ok(!fs.existsSync(out));
});

test('shared initializers get a copy per reader before channel masks act on them; the network computes the same', async () => {
  // two convs read one weight (one through an Identity, as PyTorch shares equal initializers)
  const w = Array.from({ length: 4 * 1 * 3 * 3 }, (_, i) => Math.cos(i));
  const file = path.join(tmp, 'shared.onnx');
  fs.writeFileSync(file, encode(buildModel({
    inputs: [{ name: 'x', shape: ['N', 1, 28, 28] }],
    outputs: [{ name: 'logits', shape: ['N', 10] }],
    nodes: [
      node('Identity', ['w'], ['w_alias'], {}, 'share'),
      node('Conv', ['x', 'w'], ['a'], { pads: [1, 1, 1, 1] }, 'conv_a'),
      node('Conv', ['x', 'w_alias'], ['b'], { pads: [1, 1, 1, 1] }, 'conv_b'),
      node('Add', ['a', 'b'], ['c'], {}, 'join'),
      node('Relu', ['c'], ['r'], {}, 'relu'),
      node('GlobalAveragePool', ['r'], ['p'], {}, 'pool'),
      node('Flatten', ['p'], ['f'], {}, 'flatten'),
      node('Gemm', ['f', 'fw', 'fb'], ['logits'], { transB: 1 }, 'fc'),
    ],
    initializers: [floatInit('w', [4, 1, 3, 3], w), floatInit('fw', [10, 4], Array.from({ length: 40 }, (_, i) => Math.sin(i))), floatInit('fb', [10], new Array(10).fill(0.1))],
  })));
  const model = loadModel(file);
  const own = unshareInitializers(model);
  const g = own.proto.graph!;
  assert.deepEqual(g.node!.map((n) => n.opType), ['Conv', 'Conv', 'Add', 'Relu', 'GlobalAveragePool', 'Flatten', 'Gemm']);
  const convInputs = g.node!.filter((n) => n.opType === 'Conv').map((n) => n.input![1]);
  assert.equal(new Set(convInputs).size, 2);
  assert.ok(!g.initializer!.some((t) => t.name === 'w'));
  const { diff } = await ortDiff(model, own, 4);
  assert.equal(diff, 0);
  // the unshared graph has one group with both convs as producers, each masking its own weight
  const graph = TfGraph.fromModel(own);
  const plan = planChannels(graph);
  assert.equal(plan.groups.length, 1);
  assert.deepEqual(plan.groups[0]!.masked.map((s) => s.variable).sort(), [...convInputs].sort());
  graph.dispose();
  // nothing shared: the model itself
  const resnet = loadModel(MODEL);
  assert.equal(unshareInitializers(resnet), resnet);
});

test('recipes accept structure: channel (and keep_shape) on prune stages, with the CLI\'s choices', () => {
  const ok = parseRecipe('model: m.onnx\nstages:\n  - prune: {method: admm, structure: channel, sparsity: 0.75, keep_shape: true}\n  - verify: {pgd: {eps: 0.1, steps: 20}, latency: true}\n', 'r.yaml');
  assert.deepEqual(ok.stages[0]!.options, { method: 'admm', structure: 'channel', sparsity: 0.75, 'keep-shape': true });
  assert.throws(() => parseRecipe('model: m.onnx\nstages:\n  - prune: {structure: channels}\n', 'r.yaml'), /'structure' must be one of unstructured, channel, filter, got 'channels'/);
});
