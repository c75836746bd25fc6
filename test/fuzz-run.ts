// The importer fuzz run: mutated copies of a seed model through `inspect` and `check`, each in its own
// process with a time limit. Every outcome must be a verdict (exit 0 or 1) or a one-line named error
// (exit 2); anything else (an internal error, a crash, a second line, a time-out) is a failure.
//   node dist/test/fuzz-run.js [--seed N] [--count N] [--model file.onnx] [--timeout s] [--keep]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeFuzzCases, type FuzzCase } from './helpers/fuzz.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'onnx-hydra.js');

export interface FuzzOutcome {
  case: string;
  category: string;
  command: string;
  exit: number | null;
  signal: string | null;
  seconds: number;
  stderr: string;
  /** why this outcome is not acceptable; undefined when it is */
  failure?: string;
}

function runOne(c: FuzzCase, command: string, timeoutS: number): Promise<FuzzOutcome> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, command, c.file, ...(command === 'check' ? ['--samples', '1'] : [])], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => void (stderr += b.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone already */ }
    }, timeoutS * 1000);
    child.on('close', (exit, signal) => {
      clearTimeout(timer);
      const seconds = (performance.now() - t0) / 1000;
      const lines = stderr.split('\n').filter((l) => l.trim());
      let failure: string | undefined;
      if (timedOut) failure = `no answer within ${timeoutS} s`;
      else if (exit === 0 || exit === 1) failure = undefined;
      else if (exit === 2) {
        const errs = lines.filter((l) => l.startsWith('onnx-hydra: error: '));
        if (errs.length !== 1) failure = `exit 2 without exactly one 'onnx-hydra: error:' line`;
        else if (lines.length !== 1) failure = `the error took ${lines.length} lines`;
      } else failure = `exit ${exit}${signal ? ` (${signal})` : ''}`;
      resolve({ case: c.name, category: c.category, command, exit, signal, seconds, stderr: stderr.trim().slice(0, 500), failure });
    });
  });
}

/** Run every case through `inspect` and `check`, `parallel` processes at a time. */
export async function runFuzz(o: { seed: number; count: number; model: string; timeoutS: number; parallel?: number; dir?: string }): Promise<FuzzOutcome[]> {
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-fuzz-'));
  const cases = makeFuzzCases(o.model, o.seed, o.count, dir);
  const jobs = cases.flatMap((c) => ['inspect', 'check'].map((cmd) => () => runOne(c, cmd, o.timeoutS)));
  const out: FuzzOutcome[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(Array.from({ length: o.parallel ?? 2 }, async () => {
    while (next < jobs.length) {
      const k = next++;
      out[k] = await jobs[k]!();
    }
  }));
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = (k: string, d: string): string => {
    const i = process.argv.indexOf(`--${k}`);
    return i > 0 ? process.argv[i + 1]! : d;
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-fuzz-'));
  const res = await runFuzz({ seed: Number(arg('seed', '1')), count: Number(arg('count', '100')), model: arg('model', 'models/small_cnn.onnx'), timeoutS: Number(arg('timeout', '60')), dir });
  const byKind = new Map<string, number>();
  for (const r of res) {
    const k = r.failure ? 'FAIL' : r.exit === 2 ? 'named error' : `verdict (exit ${r.exit})`;
    byKind.set(k, (byKind.get(k) ?? 0) + 1);
    if (r.failure || process.argv.includes('--verbose')) process.stdout.write(`${r.failure ? 'FAIL' : 'ok  '} ${r.case} ${r.command}: ${r.failure ?? ''} ${r.seconds.toFixed(1)} s ${r.stderr.split('\n')[0] ?? ''}\n`);
  }
  process.stdout.write(`${[...byKind].map(([k, n]) => `${k}: ${n}`).join(', ')}; slowest ${Math.max(...res.map((r) => r.seconds)).toFixed(1)} s; files in ${dir}\n`);
  if (!process.argv.includes('--keep')) fs.rmSync(dir, { recursive: true, force: true });
  process.exitCode = res.some((r) => r.failure) ? 1 : 0;
}
