// The importer never crashes or hangs on a malformed file: ~100 seeded mutations of models/small_cnn.onnx
// (truncations, byte flips, and every structural category of test/helpers/fuzz.ts) through `inspect` and
// `check`, each in its own process with a time limit. Other seeds and seed models:
//   FUZZ_SEED=7 FUZZ_MODEL=models/vgg_bn.onnx npm test   (or node dist/test/fuzz-run.js --seed 7 --model …)
// Also: a command started by npx, or by `run`, ends when they are killed.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { runFuzz } from './fuzz-run.js';

const BIN = path.resolve('bin/onnx-hydra.js');

test('fuzz: every mutated file ends in a verdict or a one-line named error, within 60 s', async () => {
  const seed = Number(process.env.FUZZ_SEED ?? 1);
  const model = process.env.FUZZ_MODEL ?? 'models/small_cnn.onnx';
  const res = await runFuzz({ seed, count: 100, model, timeoutS: 60 });
  const failures = res.filter((r) => r.failure);
  assert.equal(failures.length, 0, failures.map((f) => `${f.case} ${f.command}: ${f.failure}: ${f.stderr}`).join('\n'));
  // the mix covers the categories of the issue, and the structural edits are mostly caught as named errors
  const cats = new Set(res.map((r) => r.category));
  for (const c of ['truncate', 'flip', 'unknown-op', 'cycle', 'dangling-input', 'wrong-dims', 'nan-weights', 'external-outside', 'huge-dims-no-data', 'pads']) assert.ok(cats.has(c), c);
  // (`inspect` may also answer these with its verdict "supported NO: <the error>", exit 0)
  for (const c of ['huge-dims-no-data', 'pads', 'external-outside', 'cycle', 'unknown-op']) {
    for (const r of res.filter((x) => x.category === c && x.command === 'check')) assert.equal(r.exit, 2, `${r.case} ${r.command}: ${r.stderr}`);
  }
  const pads = res.find((r) => r.category === 'pads' && r.command === 'check')!;
  assert.match(pads.stderr, /node .*would hold .* elements per example/);
});

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const waitFor = async (cond: () => boolean, ms: number): Promise<boolean> => {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
};
const isHydra = (pid: number): boolean => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('onnx-hydra.js');
  } catch {
    return false;
  }
};
const childrenOf = (pid: number): number[] => {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
};

test('a command started by npx ends when npx is killed with SIGKILL (npx → sh → node, as npm runs it)', { skip: !fs.existsSync('/proc/self/stat') && 'needs /proc' }, async () => {
  // stand-in for npm exec: a process that starts `sh -c 'node onnx-hydra …'` with npm's environment and waits
  const starter = spawn(process.execPath, ['-e', `require('node:child_process').spawn('sh', ['-c', process.argv[1]], { stdio: 'ignore', env: { ...process.env, npm_command: 'exec' } }); setInterval(() => {}, 1000);`,
    `'${process.execPath}' '${BIN}' check models/small_cnn.onnx --samples 100000`], { stdio: 'ignore' });
  let hydra: number | undefined;
  assert.ok(await waitFor(() => {
    // (the shell may also exec node in its own place)
    const sh = childrenOf(starter.pid!)[0];
    hydra = sh ? [sh, ...childrenOf(sh)].find((p) => isHydra(p)) : undefined;
    return hydra !== undefined;
  }, 10_000), 'onnx-hydra started');
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(alive(hydra!), 'running while its starter lives');
  starter.kill('SIGKILL');
  assert.ok(await waitFor(() => !alive(hydra!), 10_000), 'onnx-hydra ended after its starter was killed');
});

test('`run` killed with SIGKILL: its stage process ends too', { skip: !fs.existsSync('/proc/self/stat') && 'needs /proc' }, async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-orphan-'));
  const recipe = path.join(tmp, 'r.yaml');
  fs.writeFileSync(recipe, 'name: t\nmodel: models/small_cnn.onnx\nstages:\n  - pretrain: {epochs: 50, eval_limit: 0, eval_steps: 0, objective: trades, eps: 0.1}\n');
  const run = spawn(process.execPath, [BIN, 'run', recipe, '--out', path.join(tmp, 'out')], { stdio: 'ignore' });
  let stage: number | undefined;
  assert.ok(await waitFor(() => (stage = childrenOf(run.pid!)[0]) !== undefined, 15_000), 'stage started');
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(alive(stage!));
  run.kill('SIGKILL');
  assert.ok(await waitFor(() => !alive(stage!), 10_000), 'the stage process ended with run');
});
