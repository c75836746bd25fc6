// Structured (channel) pruning on raw ONNX graphs: channel groups read from the graph's dataflow (tiny
// PyTorch exports: residual join, depthwise conv, Concat, Flatten→Gemm, BatchNorm, MatMul tokens, and what
// must stay dense), shrunk exports equal to the masked network on onnxruntime for random kept sets,
// constants of removed channels folded or refused, `check` on shrunk real architectures, and `bench`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import seedrandom from 'seedrandom';
import { cloneModel, loadModel, saveModel, type OnnxModel } from '../src/onnx/model.js';
import { decodeTensor, overwriteTensorData } from '../src/onnx/tensor.js';
import { PreparedGraph } from '../src/graph/graph.js';
import { countMacs } from '../src/graph/macs.js';
import { channelGroups, type ChannelAnalysis } from '../src/prune/channels.js';
import { keepLargestNorms, maskChannels, shrinkChannels, type KeptChannels } from '../src/prune/shrink.js';
import { outputDifference } from '../src/runtime/ort.js';
import { checkModel } from '../src/verify/equivalence.js';

const BIN = path.resolve('bin/onnx-hydra.js');
const torch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
const NO_TORCH = !torch && 'needs PyTorch (/usr/bin/python3 -c "import torch" fails; apt-get install python3-torch python3-torchvision)';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-channels-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

let exported = false;
/** A fixture of test/helpers/channel-fixtures.py, exported once into the temporary folder. */
function fixture(name: string): string {
  if (!exported) {
    const r = spawnSync('/usr/bin/python3', ['test/helpers/channel-fixtures.py', path.join(tmp, 'fixtures')], { encoding: 'utf8', timeout: 300_000 });
    assert.equal(r.status, 0, r.stderr.slice(-2000));
    exported = true;
  }
  return path.join(tmp, 'fixtures', `${name}.onnx`);
}

function analyse(file: string): { model: OnnxModel; prepared: PreparedGraph; a: ChannelAnalysis } {
  const model = loadModel(file);
  const prepared = new PreparedGraph(model);
  return { model, prepared, a: channelGroups(model, prepared) };
}

const producers = (a: ChannelAnalysis): string[][] => a.groups.map((g) => g.producers.map((p) => p.node));

/** Random kept channels: every group keeps a random non-empty subset. */
function randomKept(a: ChannelAnalysis, seed: string): number[][] {
  const rng = seedrandom(seed);
  return a.groups.map((g) => {
    const keep = 1 + Math.floor(rng() * g.channels);
    const idx = Array.from({ length: g.channels }, (_, i) => i).sort(() => rng() - 0.5);
    return idx.slice(0, keep).sort((x, y) => x - y);
  });
}

/** Largest |difference| of the two models' outputs on onnxruntime, and the largest |logit|, on a random batch. */
async function maxDiff(a: OnnxModel, b: OnnxModel, shape: number[], seed = 'x'): Promise<{ diff: number; scale: number }> {
  const rng = seedrandom(seed);
  const x = Float32Array.from({ length: shape.reduce((p, d) => p * d, 1) }, () => rng());
  return outputDifference(a, b, { data: x, shape });
}

const batchShape = (p: PreparedGraph, batch: number): number[] => p.inputs[0]!.shape.map((d) => (d === 'N' ? batch : (d as number)));

function initializer(m: OnnxModel, name: string): number[] {
  const t = (m.proto.graph!.initializer ?? []).find((x) => x.name === name);
  assert.ok(t, `initializer '${name}'`);
  return (t.dims ?? []).map(Number);
}

/** A copy with rows `rows` (along axis 0) of the named initializers set to zero. */
function zeroRows(m: OnnxModel, names: string[], rows: number[]): OnnxModel {
  const out = cloneModel(m);
  for (const t of out.proto.graph!.initializer ?? []) {
    if (!names.includes(t.name ?? '')) continue;
    const h = decodeTensor(t);
    const per = h.data.length / h.shape[0]!;
    const d = Float32Array.from(h.data as Float32Array);
    for (const r of rows) d.fill(0, r * per, (r + 1) * per);
    overwriteTensorData(t, d);
  }
  return out;
}

test('residual joins: the stem and the identity block share channels, so do the strided block and its 1x1 shortcut; the output layer stays dense', { skip: NO_TORCH }, () => {
  const { a } = analyse(fixture('residual'));
  assert.deepEqual(producers(a), [['/stem/stem.0/Conv', '/b1c2/b1c2.0/Conv'], ['/b1c1/b1c1.0/Conv'], ['/b2c1/b2c1.0/Conv'], ['/b2c2/b2c2.0/Conv', '/b2short/b2short.0/Conv']]);
  assert.deepEqual(a.groups.map((g) => g.channels), [8, 8, 12, 12]);
  assert.deepEqual(a.dense, [{ producers: ['/fc/Gemm'], channels: 10, reason: "they are graph output 'logits' (the classes)" }]);
  const g0 = a.groups[0]!;
  const sliced = (role: string) => g0.slices.filter((s) => s.role === role).map((s) => `${s.tensor}@${s.axis}`).sort();
  assert.deepEqual(sliced('weight'), ['b1c2.0.weight@0', 'stem.0.weight@0']);
  assert.deepEqual(sliced('norm-scale'), ['b1c2.1.weight@0', 'stem.1.weight@0']);
  assert.deepEqual(sliced('norm-var'), ['b1c2.1.running_var@0', 'stem.1.running_var@0']);
  // every conv reading the residual stream loses input channels: block 1's conv1, block 2's conv1 and shortcut
  assert.deepEqual(sliced('input-weight'), ['b1c1.0.weight@1', 'b2c1.0.weight@1', 'b2short.0.weight@1']);
  assert.deepEqual(a.groups[3]!.slices.filter((s) => s.role === 'input-weight').map((s) => `${s.tensor}@${s.axis}`), ['fc.weight@1']);
});

test('the groups come from the dataflow, not from names: the same structure with every node unnamed and every value renamed', { skip: NO_TORCH }, () => {
  const m = loadModel(fixture('residual'));
  const g = m.proto.graph!;
  const rename = new Map<string, string>();
  const to = (n: string): string => {
    if (!n) return n;
    if (!rename.has(n)) rename.set(n, `v${rename.size}`);
    return rename.get(n)!;
  };
  for (const n of g.node ?? []) {
    n.name = '';
    n.input = (n.input ?? []).map(to);
    n.output = (n.output ?? []).map(to);
  }
  for (const t of g.initializer ?? []) t.name = to(t.name ?? '');
  for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? [])]) v.name = to(v.name ?? '');
  const prepared = new PreparedGraph(m);
  const a = channelGroups(m, prepared);
  assert.deepEqual(a.groups.map((x) => [x.channels, x.producers.length, x.slices.length]), [[8, 2, 13], [8, 1, 6], [12, 1, 6], [12, 2, 11]]);
  assert.match(a.groups[0]!.producers[0]!.node, /^#\d+$/);
});

test('depthwise convolutions join the group of their input (channel multiplier 2 as blocks of 2); shrinking sets their group attribute', { skip: NO_TORCH }, async () => {
  const { model, prepared, a } = analyse(fixture('depthwise'));
  assert.deepEqual(producers(a), [
    ['/stem/stem.0/Conv', '/ir1_project/ir1_project.0/Conv'],
    ['/ir1_expand/ir1_expand.0/Conv', '/ir1_dw/ir1_dw.0/Conv'],
    ['/ir2_expand/ir2_expand.0/Conv', '/ir2_dw/ir2_dw.0/Conv'],
    ['/ir2_project/ir2_project.0/Conv'],
  ]);
  assert.deepEqual(a.groups.map((g) => g.channels), [8, 16, 6, 10]);
  const dw2 = a.groups[2]!.producers[1]!;
  assert.deepEqual([dw2.depthwise, dw2.axis, dw2.block], [true, 0, 2]);
  const read = a.groups[2]!.slices.find((s) => s.tensor === 'ir2_project.0.weight')!;
  assert.deepEqual([read.node, read.input, read.role, read.axis, read.offset, read.block], ["Conv node '/ir2_project/ir2_project.0/Conv'", 1, 'input-weight', 1, 0, 2]);
  const kept: KeptChannels = [[0, 3, 5], [1, 2, 7, 8, 15], [0, 4], undefined];
  const masked = maskChannels(model, a, kept);
  const shrunk = shrinkChannels(masked, a, kept);
  const group = (name: string) => Number(shrunk.proto.graph!.node!.find((n) => n.name === name)!.attribute!.find((x) => x.name === 'group')!.i);
  assert.equal(group('/ir1_dw/ir1_dw.0/Conv'), 5);
  assert.equal(group('/ir2_dw/ir2_dw.0/Conv'), 2);
  assert.deepEqual(initializer(shrunk, 'ir2_dw.0.weight'), [4, 1, 3, 3]);
  assert.deepEqual(initializer(shrunk, 'ir2_project.0.weight'), [10, 4, 1, 1]);
  const { diff } = await maxDiff(masked, shrunk, batchShape(prepared, 3));
  assert.ok(diff < 1e-4, `masked vs shrunk ${diff}`);
});

test('Concat along channels: each branch is its own group at its offset, the input\'s channels stay, the same channels twice are sliced twice', { skip: NO_TORCH }, () => {
  const { a } = analyse(fixture('concat'));
  assert.deepEqual(producers(a), [['/a/a.0/Conv'], ['/b/b.0/Conv'], ['/d/Conv']]);
  const reads = (g: number, tensor: string) => a.groups[g]!.slices.filter((s) => s.tensor === tensor && s.role === 'input-weight').map((s) => [s.axis, s.offset, s.block]);
  assert.deepEqual(reads(0, 'd.weight'), [[1, 0, 1]]);
  assert.deepEqual(reads(1, 'd.weight'), [[1, 7, 1]]); // after a's 4 channels and the input's 3
  assert.deepEqual(reads(2, 'fc.weight'), [[1, 0, 1], [1, 8, 1]]);
});

test('Flatten/Reshape into Gemm: a channel is a block of input features, a literal Reshape target is adjusted, Sigmoid(0) of removed channels folds into the Gemm bias', { skip: NO_TORCH }, async () => {
  const { model, prepared, a } = analyse(fixture('flatten_gemm'));
  assert.deepEqual(producers(a), [['/conv1/Conv'], ['/conv2/Conv'], ['/fc1/Gemm']]);
  const read = a.groups[1]!.slices.find((s) => s.tensor === 'fc1.weight')!;
  assert.deepEqual([read.role, read.axis, read.offset, read.block], ['input-weight', 1, 0, 16]); // 16 = 4x4 features per channel
  assert.equal(a.groups[1]!.reshapes.length, 1);
  assert.deepEqual(a.dense.map((d) => d.producers), [['/fc2/Gemm']]);
  const kept: KeptChannels = [[0, 5], [1, 2, 6], [0, 3, 4, 9, 10, 19]];
  const masked = maskChannels(model, a, kept);
  const shrunk = shrinkChannels(masked, a, kept);
  assert.deepEqual(initializer(shrunk, 'fc1.weight'), [6, 48]);
  const target = shrunk.proto.graph!.node!.find((n) => n.name === '/Constant')!.attribute![0]!.t!;
  assert.deepEqual(Array.from(decodeTensor(target).data as BigInt64Array, Number), [-1, 48]);
  const { diff, scale } = await maxDiff(masked, shrunk, batchShape(prepared, 4));
  assert.ok(scale > 0.01 && diff < 1e-4, `masked vs shrunk ${diff}`);
  // the removed channels were 0.5, not 0: without the fold the logits would differ
  const unfolded = cloneModel(shrunk);
  const fc1 = unfolded.proto.graph!.node!.find((n) => n.name === '/fc1/Gemm')!;
  const bias = unfolded.proto.graph!.initializer!.find((t) => t.name === fc1.input![2])!;
  const before = (masked.proto.graph!.initializer ?? []).find((t) => t.name === 'fc1.bias')!;
  overwriteTensorData(bias, Float32Array.from([0, 3, 4, 9, 10, 19], (i) => (decodeTensor(before).data as Float32Array)[i]!));
  assert.ok((await maxDiff(masked, unfolded, batchShape(prepared, 4))).diff > 1e-3);
});

test('BatchNorm after Conv: a BN shift left on removed channels folds into an unpadded conv; a padded conv, or weights not zeroed, is a one-line error naming the node', { skip: NO_TORCH }, async () => {
  const { model, prepared, a } = analyse(fixture('bn_shift'));
  assert.deepEqual(producers(a), [['/conv1/Conv'], ['/conv2/Conv'], ['/conv3/Conv']]);
  assert.deepEqual(a.groups[0]!.slices.map((s) => s.role).sort(), ['bias', 'input-weight', 'norm-bias', 'norm-mean', 'norm-scale', 'norm-var', 'weight']);
  // only conv1's rows (and bias) zeroed: the removed channels are ReLU(BN shift) constants, conv2 is 1x1 unpadded
  const removed1 = [1, 4, 6];
  const z1 = zeroRows(model, ['conv1.weight', 'conv1.bias'], removed1);
  const kept1 = [[0, 2, 3, 5, 7]];
  const s1 = shrinkChannels(z1, a, kept1);
  const { diff } = await maxDiff(z1, s1, batchShape(prepared, 3));
  assert.ok(diff < 1e-4, `${diff}`);
  assert.ok(s1.proto.graph!.node!.find((n) => n.name === '/conv2/Conv')!.input!.length === 3, 'conv2 got a bias');
  // conv2's removed channels carry ReLU(BN2 shift) > 0 into conv3, which pads: refused, naming conv3
  const bn = (name: string) => Array.from(decodeTensor(model.proto.graph!.initializer!.find((t) => t.name === name)!).data as Float32Array);
  const [s, b, mu, v] = ['bn2.weight', 'bn2.bias', 'bn2.running_mean', 'bn2.running_var'].map(bn);
  const positive = [0, 1, 2, 3, 4, 5].filter((c) => (s![c]! * -mu![c]!) / Math.sqrt(v![c]! + 1e-5) + b![c]! > 1e-3);
  assert.ok(positive.length > 0 && positive.length < 6);
  const z2 = zeroRows(model, ['conv2.weight'], positive);
  assert.throws(() => shrinkChannels(z2, a, [undefined, [0, 1, 2, 3, 4, 5].filter((c) => !positive.includes(c))]), /carries the constant .* into Conv node '\/conv3\/Conv', which pads its input/);
  assert.throws(() => shrinkChannels(model, a, [[0, 1]]), /not constant where Conv node '\/conv2\/Conv' reads it: its weights are not zero; mask the removed channels first/);
  assert.throws(() => shrinkChannels(model, a, [[]]), /group 0 \(\/conv1\/Conv\) must keep at least one of its 8 channels/);
  assert.throws(() => shrinkChannels(model, a, [[9]]), /kept channel 9 is not in 0\.\.7/);
  // the masked network (BN scale and shift zeroed too) needs no fold
  const masked = maskChannels(model, a, [[0], [5], [1, 2]]);
  assert.ok((await maxDiff(masked, shrinkChannels(masked, a, [[0], [5], [1, 2]]), batchShape(prepared, 2))).diff < 1e-4);
});

test('MatMul tokens: channels followed through Reshape(Shape) and Transpose into MatMul; Sigmoid constants fold into the next bias Add or an inserted one', { skip: NO_TORCH }, async () => {
  const { model, prepared, a } = analyse(fixture('tokens'));
  assert.deepEqual(producers(a), [['/conv/Conv'], ['/l1/MatMul'], ['/l2/MatMul'], ['/l3/MatMul']]);
  assert.ok(a.groups[1]!.slices.some((s) => s.tensor === 'l1.bias' && s.role === 'bias'));
  const kept: KeptChannels = [[1, 2, 7], [0, 5, 6, 11], [3, 4, 8], [0, 1, 5]];
  const masked = maskChannels(model, a, kept);
  const shrunk = shrinkChannels(masked, a, kept);
  const ops = shrunk.proto.graph!.node!.map((n) => n.opType);
  assert.equal(ops.filter((o) => o === 'Add').length, 3, 'one Add inserted after the bias-less MatMul');
  const { diff } = await maxDiff(masked, shrunk, batchShape(prepared, 3));
  assert.ok(diff < 1e-4, `${diff}`);
});

test('what cannot be pruned exactly stays dense, with a reason naming the node: Softmax over channels, a grouped conv, a channel-splitting Reshape, a Slice', { skip: NO_TORCH }, () => {
  const { a } = analyse(fixture('unprunable'));
  assert.deepEqual(producers(a), [['/conv3/Conv']]);
  const reason = (p: string) => a.dense.find((d) => d.producers.includes(p))?.reason ?? '';
  assert.match(reason('/conv1/Conv'), /Softmax node '\/Softmax' normalizes over the channel axis/);
  assert.match(reason('/conv2/Conv'), /Conv node '\/gconv\/Conv' is a grouped convolution \(group 2 of 8 channels\) and reads them/);
  assert.match(reason('/gconv/Conv'), /grouped convolution \(group 2\); its groups must keep equal sizes/);
  assert.match(reason('/conv4/Conv'), /Reshape node '\/Reshape' mixes the channels with other dimensions/);
  assert.match(reason('/conv4/Conv'), /Slice node '\/Slice'/);
  assert.match(reason('/fc/Gemm'), /graph output 'logits'/);
});

test('masked network and shrunk export give the same logits on onnxruntime for random kept sets, with fewer MACs', { skip: NO_TORCH }, async () => {
  for (const name of ['residual', 'depthwise', 'concat', 'flatten_gemm', 'bn_shift', 'tokens', 'unprunable']) {
    const { model, prepared, a } = analyse(fixture(name));
    const macs = countMacs(prepared).total;
    for (const seed of ['1', '2', '3']) {
      const kept = randomKept(a, `${name}/${seed}`);
      const masked = maskChannels(model, a, kept);
      const shrunk = shrinkChannels(masked, a, kept);
      const { diff, scale } = await maxDiff(masked, shrunk, batchShape(prepared, 5), seed);
      assert.ok(diff <= 1e-4 * (1 + scale), `${name} seed ${seed}: max |masked − shrunk| ${diff}`);
      const after = countMacs(new PreparedGraph(shrunk)).total;
      const removedAny = kept.some((k, i) => k.length < a.groups[i]!.channels);
      assert.ok(removedAny ? after < macs : after === macs, `${name} seed ${seed}: MACs ${macs} -> ${after}`);
    }
  }
});

/** Half of every group's channels removed (smallest L2 norms), masked, shrunk; `check` and masked-vs-shrunk. */
async function halfShrinkChecks(file: string): Promise<void> {
  const { model, prepared, a } = analyse(file);
  const kept = keepLargestNorms(model, a, 0.5);
  assert.ok(a.groups.length > 0);
  const masked = maskChannels(model, a, kept);
  const shrunk = shrinkChannels(masked, a, kept);
  const out = path.join(tmp, `${path.basename(file, '.onnx')}.shrunk50.onnx`);
  saveModel(shrunk, out);
  const r = await checkModel(loadModel(out), { samples: 1 });
  assert.ok(r.ok, `${file}: check ${JSON.stringify(r)}`);
  const { diff, scale } = await maxDiff(masked, shrunk, batchShape(prepared, 2));
  assert.ok(diff <= 1e-4 * (1 + scale), `${file}: masked vs shrunk ${diff}`);
  const before = countMacs(prepared).total;
  const after = countMacs(new PreparedGraph(shrunk)).total;
  assert.ok(after < 0.4 * before, `${file}: MACs ${before} -> ${after}`);
}

test('check passes on shrunk exports (50% of every group removed) of models/resnet_small.onnx and models/vgg_bn.onnx', async () => {
  for (const f of ['models/resnet_small.onnx', 'models/vgg_bn.onnx']) await halfShrinkChecks(f);
});

test('check passes on shrunk exports (50% of every group removed) of torchvision resnet18 and mobilenet_v2', { skip: NO_TORCH }, async () => {
  const dir = path.join(tmp, 'torchvision');
  const r = spawnSync('/usr/bin/python3', ['models/export_torchvision.py', dir, 'resnet18', 'mobilenet_v2'], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const groups = { resnet18: 12, mobilenet_v2: 25 };
  for (const [name, count] of Object.entries(groups)) {
    const file = path.join(dir, `${name}.onnx`);
    const { a } = analyse(file);
    assert.equal(a.groups.length, count, `${name}: ${a.dense.map((d) => d.reason).join('; ')}`);
    assert.equal(a.dense.length, 1, `${name}: only the output layer is dense`);
    await halfShrinkChecks(file);
  }
});

test('bench --json on two files: one row each with bytes, params, MACs and latency, the second with ratios to the first', async () => {
  const { model, a } = analyse('models/small_cnn.onnx');
  const kept = keepLargestNorms(model, a, 0.75);
  const small = path.join(tmp, 'small_cnn.shrunk75.onnx');
  saveModel(shrinkChannels(maskChannels(model, a, kept), a, kept), small);
  const r = spawnSync(process.execPath, [BIN, 'bench', 'models/small_cnn.onnx', small, '--json', '--seconds', '0.2', '--batch', '8', '--threads', '1'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.rows.length, 2);
  assert.ok(out.cpu.model && out.cpu.cores >= 1 && Array.isArray(out.cpu.isa));
  for (const row of out.rows) {
    assert.ok(row.bytes > 0 && row.params > 0 && row.macs > 0, JSON.stringify(row));
    assert.ok(row.latency.batch1.median_ms > 0 && row.latency.batch1.p90_ms >= row.latency.batch1.median_ms);
    assert.equal(row.latency.batchN.batch, 8);
    assert.ok(row.latency.batchN.images_per_second > 0);
  }
  assert.equal(out.rows[0].ratios, undefined);
  assert.ok(out.rows[1].ratios.macs < 0.2 && out.rows[1].ratios.params < 0.3, JSON.stringify(out.rows[1].ratios));
  const bad = spawnSync(process.execPath, [BIN, 'bench', 'models/small_cnn.onnx', 'nope.onnx'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr.trim(), "onnx-hydra: error: model file 'nope.onnx' not found");
});
