// Recipes and `onnx-hydra run`: validation before anything runs, a whole pipeline end to end on real data,
// resume after SIGKILL in the middle of fine-tuning, and the HTML report rendering in headless Chromium.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseRecipe, sweepCombinations } from '../src/pipeline/recipe.js';

const BIN = path.resolve('bin/onnx-hydra.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-run-'));

const base = (stages: string): string => `name: t\nmodel: models/small_cnn.onnx\nstages:\n${stages}`;

test('recipes: unknown keys, wrong types and impossible stage orders are rejected naming the key', () => {
  assert.throws(() => parseRecipe(base('  - pretrain: {epochs: 1, learning_rate: 0.1}\n'), 'r.yaml'), /stages\[0\] \(pretrain\): unknown key 'learning_rate'/);
  assert.throws(() => parseRecipe(base('  - prune: {sparsity: "lots"}\n'), 'r.yaml'), /'sparsity' must be a number, got "lots"/);
  assert.throws(() => parseRecipe(base('  - prune: {method: magic}\n'), 'r.yaml'), /'method' must be one of hydra, lwm, admm/);
  assert.throws(() => parseRecipe(base('  - quantize: {}\n  - prune: {sparsity: 0.9}\n'), 'r.yaml'), /prune after quantize cannot work/);
  assert.throws(() => parseRecipe(base('  - verify: {pgd: {epsilon: 0.1}}\n'), 'r.yaml'), /unknown key 'pgd.epsilon'/);
  assert.throws(() => parseRecipe(base('  - finetune: {}\n'), 'r.yaml'), /unknown stage 'finetune'/);
  assert.throws(() => parseRecipe(`model: m.onnx\nstage: []\n`, 'r.yaml'), /unknown key 'stage'/);
  assert.throws(() => parseRecipe(base('  - pretrain: {epochs: 1}\n') + 'sweep: {sparsity: [0.5]}\n', 'r.yaml'), /exactly 1/);
  const r = parseRecipe(base('  - prune: {method: hydra}\n') + 'sweep: {sparsity: [0.5, 0.9], method: [hydra, lwm]}\n', 'r.yaml');
  assert.equal(sweepCombinations(r).length, 4);
  assert.equal(sweepCombinations(parseRecipe(base('  - prune: {method: hydra}\n') + 'sweep: {seed: [0, 1, 2], method: [hydra, lwm]}\n', 'r.yaml')).length, 6);
  assert.throws(() => parseRecipe(base('  - prune: {method: hydra}\n') + 'sweep: {seed: [0.5]}\n', 'r.yaml'), /'seed' must be a list of integers/);
  for (const f of fs.readdirSync('pipelines').filter((f) => /\.ya?ml$/.test(f))) {
    const rr = spawnSync(process.execPath, [BIN, 'run', `pipelines/${f}`, '--check'], { encoding: 'utf8' });
    assert.equal(rr.status, 0, `${f}: ${rr.stderr}`);
  }
  const bad = path.join(tmp, 'bad.yaml');
  fs.writeFileSync(bad, base('  - pretrain: {epochs: one}\n'));
  const rr = spawnSync(process.execPath, [BIN, 'run', bad, '--out', path.join(tmp, 'bad-run')], { encoding: 'utf8' });
  assert.equal(rr.status, 2);
  assert.equal(rr.stderr.trim().split('\n').length, 1);
  assert.match(rr.stderr, /'epochs' must be a number/);
  assert.ok(!fs.existsSync(path.join(tmp, 'bad-run')), 'nothing ran');
});

const small = (finetuneEpochs: number): string => base(`  - pretrain: {epochs: 1, train_limit: 6000, eval_limit: 200, epoch_pgd: 100, eval_steps: 0, final_eval_limit: 100}
  - prune: {method: hydra, sparsity: 0.9, objective: natural, prune_epochs: 1, finetune_epochs: ${finetuneEpochs}, train_limit: 2048, batch_size: 32, eval_limit: 200, epoch_pgd: 100, eval_steps: 0, final_eval_limit: 100}
  - quantize: {calibration_size: 64, eval_limit: 200}
  - verify: {pgd: {steps: 2}, ibp: {eps: 0.001}, limit: 100}
`);

test('run: pretrain → prune → quantize → verify end to end; report.json numbers are onnxruntime verdicts on the int8 file', () => {
  const recipe = path.join(tmp, 'small.yaml');
  fs.writeFileSync(recipe, small(1));
  const out = path.join(tmp, 'run-small');
  const r = spawnSync(process.execPath, [BIN, 'run', recipe, '--out', out, '--json'], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const rep = JSON.parse(r.stdout);
  const v = rep.variants[0].verify[0];
  assert.equal(v.model.quantized, true);
  assert.equal(v.judged, '03-quantize.onnx');
  assert.equal(v.data.n, 100);
  assert.ok(v.benign.acc > 0.3, `benign ${v.benign.acc}`);
  assert.ok(Math.abs(rep.variants[0].sparsity - 0.9) < 1e-3);
  for (const f of ['01-pretrain.onnx', '02-prune.onnx', '03-quantize.onnx', '04-verify.json', 'dense-verify.json', 'report.json', 'report.html', 'run.json']) assert.ok(fs.existsSync(path.join(out, f)), f);
  // the headline: the dense model that entered pruning, verified with the same settings, then the int8 file
  const [dense, int8] = rep.variants[0].headline;
  assert.equal(dense.stage, 'dense');
  assert.equal(dense.file, '01-pretrain.onnx');
  assert.equal(int8.stage, 'int8');
  assert.equal(int8.file, '03-quantize.onnx');
  const denseVerify = JSON.parse(fs.readFileSync(path.join(out, 'dense-verify.json'), 'utf8'));
  assert.deepEqual(denseVerify.pgd.settings, v.pgd.settings, 'same attack settings');
  assert.equal(denseVerify.data.n, v.data.n);
  assert.equal(dense.benign, denseVerify.benign.acc);
  for (const row of [dense, int8]) {
    assert.ok(row.macs > 500_000 && row.latency.batch1_median_ms > 0 && row.latency.images_per_second > 0, JSON.stringify(row));
    assert.ok(row.robust <= row.benign);
    assert.ok(row.certified.ibp.acc >= 0);
  }
  assert.equal(dense.macs, 609_384, 'small_cnn: 16·14·14·16 + 32·7·7·256 + 100·1568 + 10·100 multiply-accumulates');
  assert.ok(Math.abs(int8.delta.benign_points - 100 * (int8.benign - dense.benign)) < 1e-9);
  assert.ok(int8.delta.bytes_x > 3, 'int8 weights: about 4x fewer bytes');
  // training curves per phase, with test and robust accuracy per epoch
  const curves = rep.variants[0].curves;
  assert.deepEqual(curves.map((c: { phase: string }) => c.phase), ['pretrain', 'hydra scores', 'hydra finetune']);
  for (const c of curves) for (const e of c.epochs) assert.ok(e.test_acc !== undefined && e.robust_acc !== undefined && e.robust_acc <= 1, JSON.stringify(e));
  // kept weights per layer: count and percent
  const conv1 = rep.variants[0].layers.find((l: { name: string }) => l.name === 'conv1.weight');
  assert.equal(conv1.params, 256);
  assert.equal(conv1.kept, Math.ceil(0.1 * 256));
  assert.ok(Math.abs(conv1.kept_pct - conv1.kept / 256) < 1e-12);
  assert.ok(!fs.readdirSync(out).some((f) => f.endsWith('.tmp')), 'no half-written files');
  // a second call finds everything done
  const again = spawnSync(process.execPath, [BIN, 'run', recipe, '--out', out], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /01-pretrain\] done earlier/);
  assert.doesNotMatch(again.stderr, /running: onnx-hydra train/);
  // run.json holds paths relative to the run folder: a moved folder is still a finished run
  const moved = `${out}-moved`;
  fs.cpSync(out, moved, { recursive: true });
  const state = JSON.parse(fs.readFileSync(path.join(moved, 'run.json'), 'utf8'));
  assert.equal(state.stages['01-pretrain'].artifact, '01-pretrain.onnx');
  const again2 = spawnSync(process.execPath, [BIN, 'run', recipe, '--out', moved], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(again2.status, 0, again2.stderr);
  assert.doesNotMatch(again2.stderr, /running:/, 'nothing ran again');
});

test('run: a sweep over seed runs each setting once per seed with that seed, and the report gives each setting\'s mean and spread', () => {
  const recipe = path.join(tmp, 'seeds.yaml');
  fs.writeFileSync(recipe, `name: seeds\nmodel: models/mlp.onnx\nstages:\n  - prune: {method: lwm, sparsity: 0.5, objective: natural, finetune_epochs: 1, train_limit: 512, batch_size: 64, eval_limit: 0, eval_steps: 0, final_eval_limit: 50}\n  - verify: {pgd: {steps: 2}, limit: 200}\nsweep: {seed: [3, 4]}\n`);
  const out = path.join(tmp, 'run-seeds');
  const r = spawnSync(process.execPath, [BIN, 'run', recipe, '--out', out, '--json'], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const rep = JSON.parse(r.stdout);
  assert.deepEqual(rep.variants.map((v: { variant: string }) => v.variant), ['seed-3', 'seed-4']);
  // each variant's stages ran with its own seed
  for (const seed of [3, 4]) {
    for (const stage of ['01-prune', '02-verify']) assert.match(fs.readFileSync(path.join(out, `seed-${seed}`, `${stage}.log`), 'utf8'), new RegExp(`--seed ${seed}\\b`), `${stage} of seed ${seed}`);
  }
  const pruned = rep.variants.map((v: { headline: { stage: string; benign: number; robust: number }[] }) => v.headline.find((h) => h.stage === 'pruned')!);
  assert.equal(rep.seeds.length, 1);
  const e = rep.seeds[0];
  assert.deepEqual(e.seeds, [3, 4]);
  assert.deepEqual(e.robust, pruned.map((h: { robust: number }) => h.robust));
  assert.ok(Math.abs(e.benign_mean - (pruned[0].benign + pruned[1].benign) / 2) < 1e-12);
  assert.ok(Math.abs(e.benign_sd - Math.abs(pruned[0].benign - pruned[1].benign) / Math.SQRT2) < 1e-12);
  assert.match(fs.readFileSync(path.join(out, 'report.html'), 'utf8'), /Repeats over seeds/);
});

test('run: SIGKILL in the middle of fine-tuning, then the same command resumes from the epoch checkpoint and finishes', async () => {
  const recipe = path.join(tmp, 'kill.yaml');
  fs.writeFileSync(recipe, small(4));
  const out = path.join(tmp, 'run-kill');
  const child = spawn(process.execPath, [BIN, 'run', recipe, '--out', out], { detached: true, stdio: 'ignore' });
  const ckpt = path.join(out, '02-prune.onnx.ckpt', 'finetune');
  const t0 = Date.now();
  // wait until fine-tuning has checkpointed its first epoch, then kill the whole process group
  while (!(fs.existsSync(ckpt) && fs.readdirSync(ckpt).some((f) => /json$/.test(f)))) {
    assert.ok(Date.now() - t0 < 240_000, 'fine-tuning never checkpointed');
    await new Promise((res) => setTimeout(res, 200));
  }
  process.kill(-child.pid!, 'SIGKILL');
  await new Promise((res) => setTimeout(res, 300));
  assert.ok(!fs.existsSync(path.join(out, '02-prune.onnx')), 'no pruned file under its final name before the stage finished');
  const r = spawnSync(process.execPath, [BIN, 'run', recipe, '--out', out, '--json'], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  assert.match(r.stderr, /\[02-prune\] resuming/);
  assert.match(r.stderr, /resum/i);
  const state = JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8'));
  assert.equal(state.stages['02-prune'].resumed, true);
  assert.equal(state.stages['01-pretrain'].resumed, false);
  const prune = JSON.parse(fs.readFileSync(path.join(out, '02-prune.onnx.report.json'), 'utf8'));
  assert.equal(prune.phases.find((p: { name: string }) => p.name === 'finetune').history.length, 4);
  assert.ok(prune.resumed.includes('finetune'), JSON.stringify(prune.resumed));
});

const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((c) => fs.existsSync(c));
test('report.html renders in headless Chromium (charts drawn, tables filled)', { skip: !chromium && 'apt-get install chromium' }, () => {
  const html = path.join(tmp, 'run-small', 'report.html');
  assert.ok(fs.existsSync(html), 'the end-to-end test wrote it');
  const r = spawnSync(chromium!, ['--headless', '--no-sandbox', '--disable-gpu', '--virtual-time-budget=5000', '--dump-dom', `file://${html}`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr.slice(-500));
  assert.match(r.stdout, /data-rendered="yes"/, 'the chart script ran to the end');
  assert.match(r.stdout, /<table id="verify">[\s\S]*03-quantize\.onnx \(int8\)/);
  assert.match(r.stdout, /<table id="headline">[\s\S]*dense[\s\S]*01-pretrain\.onnx[\s\S]*int8[\s\S]*03-quantize\.onnx/);
  // every chart drew data: coloured pixels on its canvas (axes, grid and text are grey and do not count)
  const canvases = [...r.stdout.matchAll(/<canvas id="(\w+)"[^>]*data-ink="(\d+)"/g)].map((m) => ({ id: m[1]!, ink: Number(m[2]) }));
  assert.deepEqual(canvases.map((c) => c.id), ['acc', 'curve0', 'curve1', 'curve2', 'layers']);
  for (const c of canvases) assert.ok(c.ink > 300, `chart ${c.id} drew ${c.ink} coloured pixels`);
  assert.equal((r.stdout.match(/<canvas/g) ?? []).length, canvases.length, 'every canvas was measured');
});
