// The onnx-hydra command as a user runs it: JSON output, and one-line errors for bad input.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { buildModel, encode, floatInit, node } from './helpers/build-model.js';

const BIN = path.resolve('bin/onnx-hydra.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-cli-'));

function run(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function assertOneLineError(r: { code: number; out: string; err: string }, pattern: RegExp): void {
  assert.notEqual(r.code, 0, 'should exit non-zero');
  const lines = r.err.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected, got:\n${r.err}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
}

test('inspect --json describes a model, its prunable layers and sparsity', () => {
  const r = run('inspect', 'models/small_cnn.onnx', '--json');
  assert.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out);
  assert.equal(s.opsets['ai.onnx'], 13);
  assert.deepEqual(s.inputs[0].shape, ['batch', 1, 28, 28]);
  assert.equal(s.supported, true);
  assert.deepEqual(s.layers.filter((l: { prunable: boolean }) => l.prunable).map((l: { name: string }) => l.name), ['conv1.weight', 'conv2.weight', 'fc1.weight', 'fc2.weight']);
  assert.equal(s.parameters.prunable, 256 + 8192 + 156800 + 1000);
  assert.equal(s.global_sparsity, 0);
  assert.equal(s.op_histogram.Conv, 2);
  const text = run('inspect', 'models/vgg_bn.onnx');
  assert.equal(text.code, 0);
  assert.match(text.out, /supported yes/);
  assert.match(text.out, /prunable layers/);
});

test('check --json reports the fields tools depend on and exits 0 when the graphs agree', () => {
  const r = run('check', 'models/resnet_small.onnx', '--samples', '2', '--json');
  assert.equal(r.code, 0, r.err);
  const c = JSON.parse(r.out);
  for (const k of ['max_abs_diff', 'argmax_agreement', 'export_max_abs_diff', 'ok']) assert.ok(k in c, k);
  assert.equal(c.ok, true);
  assert.equal(c.batch, 8);
  assert.ok(c.max_abs_diff < 1e-4);
});

test('bad input gives one line naming the problem and a non-zero exit', () => {
  const bytes = fs.readFileSync('models/small_cnn.onnx');
  const truncated = path.join(tmp, 'truncated.onnx');
  fs.writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
  assertOneLineError(run('check', truncated), /truncated\.onnx' is not a valid ONNX model/);

  const random = path.join(tmp, 'random.onnx');
  let seed = 12345;
  fs.writeFileSync(random, Buffer.from(Array.from({ length: 4096 }, () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) >> 16) & 255)));
  assertOneLineError(run('inspect', random), /random\.onnx'.*(not a valid ONNX model|not an ONNX model|no graph|ir_version)/);

  const intInput = path.join(tmp, 'int-input.onnx');
  fs.writeFileSync(intInput, encode(buildModel({
    inputs: [{ name: 'ids', dtype: 'int64', shape: ['batch', 4] }],
    outputs: [{ name: 'y', shape: ['batch', 4] }],
    nodes: [node('Cast', ['ids'], ['y'], { to: 1 }, 'to_float')],
  })));
  assertOneLineError(run('check', intInput), /input 'ids' is int64; onnx-hydra works on classifiers with a float input/);

  const unsupported = path.join(tmp, 'unsupported.onnx');
  fs.writeFileSync(unsupported, encode(buildModel({
    inputs: [{ name: 'x', shape: ['batch', 3, 8, 8] }],
    outputs: [{ name: 'y', shape: ['batch', 3, 8, 8] }],
    nodes: [
      node('LRN', ['x'], ['a'], { size: 3 }, 'norm1'),
      node('Relu', ['a'], ['b'], {}, 'act'),
      node('Resize', ['b'], ['c'], {}, 'up'),
      node('LRN', ['c'], ['y'], { size: 3 }, 'norm2'),
    ],
  })));
  assertOneLineError(run('check', unsupported), /unsupported operators: LRN at 'norm1', 'norm2'; Resize at 'up'/);
  const insp = run('inspect', unsupported, '--json');
  assert.equal(insp.code, 0);
  assert.equal(JSON.parse(insp.out).supported, false);

  assertOneLineError(run('check', path.join(tmp, 'nope.onnx')), /nope\.onnx' not found/);
  assertOneLineError(run('check', 'models/small_cnn.onnx', '--samples', '0'), /--samples must be a positive integer/);
  const conv = path.join(tmp, 'bad-conv.onnx');
  fs.writeFileSync(conv, encode(buildModel({
    inputs: [{ name: 'x', shape: ['batch', 3, 8, 8] }],
    outputs: [{ name: 'y', shape: ['batch', 4, 6, 6] }],
    nodes: [node('Conv', ['x', 'w'], ['y'], {}, 'conv_a')],
    initializers: [floatInit('w', [4, 2, 3, 3], new Array(72).fill(0.1))],
  })));
  assertOneLineError(run('check', conv), /Conv node 'conv_a': input has 3 channels, weight expects 2/);
});

test('usage errors name the flag', () => {
  const r = run('check', 'models/small_cnn.onnx', '--bogus-flag');
  assert.notEqual(r.code, 0);
  assert.match(r.err, /Unknown argument: bogus-flag/);
});

test('train --json: every objective runs end to end on real data; the export runs in onnxruntime with the same predictions', () => {
  for (const objective of ['natural', 'pgd', 'trades', 'smooth', 'ibp', 'crown-ibp', 'mixtrain']) {
    const out = path.join(tmp, `mlp.${objective}.onnx`);
    const r = run('train', 'models/mlp.onnx', '--objective', objective, '--epochs', '1', '--train-limit', '1024', '--batch-size', '64', '--steps', '3', '--schedule', 'constant', '--eps', '0.05',
      // interval-bound training wants Adam at 1e-3 (as in Gowal et al.); the others SGD
      ...(['ibp', 'crown-ibp', 'mixtrain'].includes(objective) ? ['--optimizer', 'adam', '--lr', '0.001', '--eps-warmup', '0.5'] : ['--lr', '0.02', '--eps-warmup', '0']),
      '--eval-limit', '0', '--final-eval-limit', '200', '--eval-steps', '3', '--out', out, '--json');
    assert.equal(r.code, 0, `${objective}: ${r.err}`);
    const rep = JSON.parse(r.out);
    assert.equal(rep.objective.kind, objective);
    assert.match(rep.engine, /^ort: /);
    assert.equal(rep.history.length, 1);
    assert.ok(Number.isFinite(rep.history[0].loss));
    assert.ok(rep.final.benign_acc > 0.2, `${objective}: benign accuracy ${rep.final.benign_acc}`);
    assert.ok(rep.final.pgd_acc <= rep.final.benign_acc);
    assert.equal(rep.export.onnxruntime.prediction_agreement, 1);
    assert.ok(fs.existsSync(out) && fs.existsSync(`${out}.report.json`) && fs.existsSync(`${out}.ckpt/last.json`));
  }
});

test('train: clear one-line errors for bad flags and data that does not fit', () => {
  assertOneLineError(run('train', 'models/mlp.onnx', '--lr', '-1', '--epochs', '1', '--out', path.join(tmp, 'x.onnx')), /--lr must be > 0/);
  assertOneLineError(run('train', 'models/mlp.onnx', '--objective', 'ibp', '--norm', 'l2', '--out', path.join(tmp, 'x.onnx')), /ibp bounds the L∞ ball/);
  assertOneLineError(run('train', 'models/mlp.onnx', '--backend', 'tensorflow'), /@tensorflow\/tfjs-node is not installed. Install it with `npm install @tensorflow\/tfjs-node@/);
  assertOneLineError(run('train', 'models/mlp.onnx', '--data', 'idx:/nonexistent.gz,/x.gz', '--out', path.join(tmp, 'x.onnx')), /nonexistent/);
  assertOneLineError(run('train', 'models/mlp.onnx', '--out', 'models/mlp.onnx'), /would overwrite the input model/);
});

test('prune: one-line errors before any training for a bad sparsity, no prunable layer, data of the wrong shape', () => {
  const out = path.join(tmp, 'p.onnx');
  assertOneLineError(run('prune', 'models/small_cnn.onnx', '--sparsity', '1', '--out', out), /--sparsity must be in \(0, 1\)/);
  assertOneLineError(run('prune', 'models/small_cnn.onnx', '--sparsity', '0', '--out', out), /--sparsity must be in \(0, 1\)/);
  const relu = path.join(tmp, 'relu.onnx');
  fs.writeFileSync(relu, encode(buildModel({ inputs: [{ name: 'x', shape: ['N', 1, 28, 28] }], outputs: [{ name: 'y', shape: ['N', 1, 28, 28] }], nodes: [node('Relu', ['x'], ['y'])] })));
  assertOneLineError(run('prune', relu, '--out', out), /no prunable layer/);
  assertOneLineError(run('prune', 'models/vgg_bn.onnx', '--out', out), /has images of shape \[1,28,28\], the model expects \[3,32,32\]/);
});

test('prune --json: HYDRA end to end; the exported file has the requested sparsity and runs in onnxruntime', () => {
  const out = path.join(tmp, 'small_cnn.hydra.onnx');
  const r = run('prune', 'models/small_cnn.onnx', '--method', 'hydra', '--sparsity', '0.9', '--objective', 'natural', '--prune-epochs', '1', '--finetune-epochs', '1',
    '--train-limit', '512', '--eval-limit', '0', '--final-eval-limit', '200', '--eval-steps', '2', '--out', out, '--json');
  assert.equal(r.code, 0, r.err);
  const rep = JSON.parse(r.out);
  assert.equal(rep.method, 'hydra');
  assert.ok(Math.abs(rep.sparsity.sparsity - 0.9) < 1e-3, `sparsity ${rep.sparsity.sparsity}`);
  for (const l of rep.sparsity.layers) assert.equal(l.params - l.zeros, Math.ceil(0.1 * l.params - 1e-9), l.name);
  assert.equal(rep.export.onnxruntime.prediction_agreement, 1);
  assert.ok(rep.export.gzip_bytes < rep.export.original_gzip_bytes / 3, 'pruned file compresses');
  const ins = run('inspect', out, '--json');
  assert.equal(ins.code, 0, ins.err);
  assert.match(ins.out, /"sparsity"/);
});

test('verify: one-line errors for data of the wrong shape or label count, ε < 0, σ ≤ 0, n0 > n, unknown keys', () => {
  assertOneLineError(run('verify', 'models/vgg_bn.onnx', '--limit', '10'), /has images of shape \[1,28,28\], the model expects \[3,32,32\]/);
  const five = path.join(tmp, 'five.onnx');
  fs.writeFileSync(five, encode(buildModel({
    inputs: [{ name: 'x', shape: ['N', 1, 28, 28] }], outputs: [{ name: 'z', shape: ['N', 5] }],
    nodes: [node('Flatten', ['x'], ['f']), node('Gemm', ['f', 'W'], ['z'])], initializers: [floatInit('W', [784, 5], new Array(784 * 5).fill(0.01))],
  })));
  assertOneLineError(run('verify', five, '--limit', '10', '--benign'), /has 10 classes, the model outputs 5/);
  assertOneLineError(run('verify', 'models/small_cnn.onnx', '--pgd', 'eps=-0.1'), /--pgd: eps must be ≥ 0, got '-0.1'/);
  assertOneLineError(run('verify', 'models/small_cnn.onnx', '--smoothing', 'sigma=0'), /--smoothing: sigma must be > 0/);
  assertOneLineError(run('verify', 'models/small_cnn.onnx', '--smoothing', 'n0=500,n=100'), /n0 \(500\) must not exceed n \(100\)/);
  assertOneLineError(run('verify', 'models/small_cnn.onnx', '--pgd', 'epsilon=0.1'), /--pgd: unknown key 'epsilon'/);
  assertOneLineError(run('verify', 'models/small_cnn.onnx', '--provider', 'cuda'), /CUDA/);
});

test('verify --json: every metric on an int8 QDQ artifact; the report names the model, data, provider and settings', async () => {
  const { quantizeInt8 } = await import('../src/quant/qdq.js');
  const { loadModel, saveModel } = await import('../src/onnx/model.js');
  const { loadData } = await import('../src/data/index.js');
  const d = loadData('fashion-mnist').train;
  const q = await quantizeInt8(loadModel('models/small_cnn.onnx'), { x: d.x.subarray(0, 128 * 784), shape: [128, 1, 28, 28] }, { calibration: 'minmax', percentile: 99.99 });
  const file = path.join(tmp, 'small_cnn.int8.onnx');
  saveModel(q.model, file);
  const r = run('verify', file, '--limit', '40', '--pgd', 'steps=3', '--square', 'queries=30', '--ibp', 'eps=0.001', '--smoothing', 'n0=10,n=100,sigma=0.1', '--json');
  assert.equal(r.code, 0, r.err);
  const rep = JSON.parse(r.out);
  assert.equal(rep.model.quantized, true);
  assert.match(rep.model.sha256, /^[0-9a-f]{64}$/);
  assert.equal(rep.data.n, 40);
  assert.equal(rep.provider, 'cpu');
  assert.equal(rep.pgd.settings.steps, 3);
  assert.equal(rep.pgd.settings.eps, 0.1);
  for (const k of ['benign', 'pgd', 'square', 'ibp', 'smoothing']) assert.ok(rep[k].seconds >= 0, k);
  assert.ok(rep.robust.acc <= Math.min(rep.pgd.acc, rep.square.acc));
  assert.ok(rep.pgd.acc <= rep.benign.acc && rep.square.acc <= rep.benign.acc);
  assert.equal(rep.smoothing.certified.length, 5);
  const out = path.join(tmp, 'v.json');
  const t = run('verify', 'models/small_cnn.onnx', '--limit', '20', '--benign', '--json', out);
  assert.equal(t.code, 0, t.err);
  assert.match(t.out, /benign/);
  assert.equal(JSON.parse(fs.readFileSync(out, 'utf8')).benign.correct >= 0, true);
});

test('an operator without a compiled gradient rule (Selu) never ends in an internal error: verify --pgd and train --objective pgd work', () => {
  const rnd = (n: number, scale: number): number[] => Array.from({ length: n }, (_, i) => scale * Math.sin(1 + i * 0.37));
  const m = buildModel({
    inputs: [{ name: 'x', shape: ['N', 1, 28, 28] }], outputs: [{ name: 'y', shape: ['N', 10] }],
    nodes: [node('Flatten', ['x'], ['f']), node('Gemm', ['f', 'w1', 'b1'], ['h'], { transB: 1 }), node('Selu', ['h'], ['s']), node('Gemm', ['s', 'w2', 'b2'], ['y'], { transB: 1 })],
    initializers: [floatInit('w1', [16, 784], rnd(16 * 784, 0.05)), floatInit('b1', [16], rnd(16, 0.1)), floatInit('w2', [10, 16], rnd(160, 0.3)), floatInit('b2', [10], rnd(10, 0.1))],
  });
  const file = path.join(tmp, 'selu.onnx');
  fs.writeFileSync(file, encode(m));
  const v = run('verify', file, '--pgd', 'steps=3', '--limit', '40', '--json');
  assert.equal(v.code, 0, v.err);
  assert.doesNotMatch(v.err, /internal error/);
  const rep = JSON.parse(v.out);
  assert.ok(rep.pgd.acc <= rep.benign.acc);
  const t = run('train', file, '--objective', 'pgd', '--steps', '2', '--epochs', '1', '--train-limit', '64', '--batch-size', '32', '--eval-limit', '0', '--eval-steps', '2', '--final-eval-limit', '20', '--out', path.join(tmp, 'selu.pgd.onnx'), '--json');
  assert.equal(t.code, 0, t.err);
  assert.doesNotMatch(t.err, /internal error/);
  assert.ok(fs.existsSync(path.join(tmp, 'selu.pgd.onnx')));
});
