// npm run bench:step -- MODEL [--batch 128] [--kind natural|trades|pgd] [--steps 10] [--isa avx2]
// Times single training steps (or fused PGD calls) of one model on the compiled engine, step by step, with the
// onnxruntime calls of the last steps listed (per session: its calls and their ms). For A/B comparisons of two
// builds, and with HYDRA_ORT_PROFILE=prefix for onnxruntime's own per-kernel profiles (one JSON per session).
// MODEL: models/<name>.onnx, or a torchvision classifier of models/export_torchvision.py (exported once into .cache/).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { selectEngine } from '../src/engine/select.js';
import { Net } from '../src/engine/net.js';
import { loadModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { makeRng } from '../src/util/rng.js';
import { DEFAULT_OBJECTIVE, makeObjective } from '../src/train/objectives.js';
import { Optimizer } from '../src/train/optim.js';
import { SyncSession, flushProfiles } from '../src/engine/ort-sync.js';
import { modelFile, trainStep } from './workloads.js';
import { applyIsaLimit, isaNote, type IsaLimit } from './isa.js';

const args = yargs(hideBin(process.argv))
  .command('$0 <model>', 'time steps of one model')
  .positional('model', { type: 'string', demandOption: true })
  .option('batch', { type: 'number', default: 128 })
  .option('kind', { choices: ['natural', 'trades', 'pgd'] as const, default: 'natural' as const })
  .option('steps', { type: 'number', default: 10 })
  .option('isa', { choices: ['native', 'avx2'] as const, default: 'native' as IsaLimit, describe: 'avx2: AVX2 kernels only, as on an AVX2-only CPU (bench/isa.ts)' })
  .strict()
  .parseSync();
applyIsaLimit(args.isa);

// every onnxruntime call, by session (numbered in order of first use)
const calls: { session: string; ms: number }[] = [];
const sessionIds = new WeakMap<SyncSession, string>();
let sessions = 0;
const run = SyncSession.prototype.run;
SyncSession.prototype.run = function (this: SyncSession, ...a: Parameters<typeof run>) {
  if (!sessionIds.has(this)) sessionIds.set(this, `session ${sessions++} (${this.inputNames.length} in, ${(a[1] ?? this.outputNames).length} out)`);
  const started = performance.now();
  const out = run.apply(this, a);
  calls.push({ session: sessionIds.get(this)!, ms: performance.now() - started });
  return out;
};

const name = args.model as string;
const net = new Net(TfGraph.fromModel(loadModel(modelFile(name))), selectEngine('auto'));
const batch = args.batch;
const shape = [batch, ...net.inputShape];
const rng = makeRng(0);
const xd = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng());
const yd = Int32Array.from({ length: batch }, () => Math.floor(rng() * net.classes));
const opt = new Optimizer({ name: 'sgd', lr: 0.01, momentum: 0.9, weightDecay: 1e-4 });

const times: number[] = [];
let step: () => void;
if (args.kind === 'pgd') {
  const frozen = net.frozen();
  const target = new Float32Array(batch * net.classes);
  for (let i = 0; i < batch; i++) target[i * net.classes + yd[i]!] = 1;
  let xAdv: Float32Array = xd.slice();
  step = () => (xAdv = frozen.pgdStep(xAdv, xd, batch, target, 0.01, 0.1, 'linf').next);
} else {
  const objective = makeObjective(args.kind === 'natural' ? { ...DEFAULT_OBJECTIVE, kind: 'natural' } : { ...DEFAULT_OBJECTIVE, kind: 'trades', eps: 0.1, alpha: 0.01, steps: 10, beta: 6 });
  let k = 0;
  step = () => trainStep(net, objective, opt, xd, yd, shape, k++);
}
const ortTimes: number[] = [];
for (let s = 0; s < args.steps; s++) {
  calls.length = 0;
  const started = performance.now();
  step();
  times.push(performance.now() - started);
  ortTimes.push(calls.reduce((p, c) => p + c.ms, 0));
  if (s >= args.steps - 2) {
    const bySession = new Map<string, number[]>();
    for (const c of calls) bySession.set(c.session, [...(bySession.get(c.session) ?? []), c.ms]);
    console.log(`step ${s}: ${times.at(-1)!.toFixed(0)} ms, onnxruntime ${ortTimes.at(-1)!.toFixed(0)} ms: ${[...bySession].map(([k, v]) => `${k} x${v.length} ${v.map((x) => x.toFixed(1)).join('/')}`).join('; ')}`);
  }
}
// the second half of the steps (at least after 4): onnxruntime's calls take ~40% longer for their first
// ~0.3 s in a process (the small CNN's PGD call: 4.5 ms for its first 75 calls, 3.2 after; measured)
const skip = Math.min(Math.max(4, times.length >> 1), times.length - 1);
const later = times.slice(skip).sort((a, b) => a - b);
const median = later[later.length >> 1]!;
const mean = (v: number[]): number => v.reduce((p, q) => p + q, 0) / v.length;
const outside = mean(times.slice(skip)) - mean(ortTimes.slice(skip));
console.log(`${name} ${args.kind} batch ${batch}: ms per step ${times.map((t) => t.toFixed(0)).join(' ')}; median after ${skip}: ${median.toFixed(1)} ms = ${((batch / median) * 1000).toFixed(0)} img/s; outside onnxruntime ${outside.toFixed(1)} ms a step (mean)`);
console.log(`weights: ${JSON.stringify(net.weightHandling())}; kernels: ${isaNote(args.isa)}`);
flushProfiles();
net.dispose();
