// npm run bench [-- --json] [--models small_cnn,resnet_small] [--batch 128] [--seconds 3] [--backend ort] [--isa avx2]
// Torchvision classifiers at 3x32x32 (resnet18, mobilenet_v2, vit_small, … of models/export_torchvision.py)
// are exported once into .cache/torchvision/ with python3-torch: --models resnet18,mobilenet_v2,vit_small
// Images/s of forward, input gradient, natural training step and TRADES-10 training step, for onnx-hydra
// and (when python3-torch is installed) for PyTorch on the same machine in the same run, with ratios.
// Timings are medians over repeated steps; PyTorch runs before and after ours and the better of its two
// runs is used, so machine drift does not favour us. --isa avx2 limits both sides to AVX2 kernels on an
// AVX-512 machine (bench/isa.ts).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { selectEngine, type BackendChoice } from '../src/engine/select.js';
import { Net } from '../src/engine/net.js';
import { loadModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { makeRng } from '../src/util/rng.js';
import { modelFile, trainStep } from './workloads.js';
import { DEFAULT_OBJECTIVE, makeObjective } from '../src/train/objectives.js';
import { Optimizer } from '../src/train/optim.js';
import { packageRoot } from '../src/data/dataset.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { applyIsaLimit, isaNote, type IsaLimit } from './isa.js';
import { torchEnv, torchMallocNote } from './torch-env.js';

const WORKLOADS = ['forward', 'input_grad', 'natural_step', 'trades10_step'] as const;
type Workload = (typeof WORKLOADS)[number];

const args = yargs(hideBin(process.argv))
  .option('json', { type: 'boolean', default: false })
  .option('models', { type: 'string', default: 'small_cnn,resnet_small' })
  .option('batch', { type: 'number', default: 128 })
  .option('seconds', { type: 'number', default: 4, describe: 'time per workload' })
  .option('backend', { type: 'string', default: 'auto' })
  .option('torch', { type: 'boolean', default: true, describe: 'also run PyTorch (python3-torch)' })
  .option('isa', { choices: ['native', 'avx2'] as const, default: 'native' as IsaLimit, describe: 'avx2: both sides use AVX2 kernels only, as on an AVX2-only CPU (bench/isa.ts)' })
  .strict()
  .parseSync();
applyIsaLimit(args.isa);

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
}

/** untimed training steps: the compiled engine times baked against fed weights on a configuration's first 6 */
const TRAIN_WARMUP = 8;

/** Median seconds per call of f after `warmup` untimed calls, over at least `seconds` and 5 calls. */
function timeIt(f: () => void, seconds: number, warmup = 3): number {
  for (let i = 0; i < warmup; i++) f();
  const times: number[] = [];
  const t0 = performance.now();
  while (times.length < 5 || performance.now() - t0 < seconds * 1000) {
    const t = performance.now();
    f();
    times.push((performance.now() - t) / 1000);
  }
  return median(times);
}

/** per model: the compiled engine's weight handling per configuration once the timed steps ran ("baked" / "fed") */
const weightHandling: Record<string, Record<string, string>> = {};

function benchOurs(model: string, batch: number, seconds: number, backend: BackendChoice): Record<Workload, number> {
  const engine = selectEngine(backend);
  const graph = TfGraph.fromModel(loadModel(modelFile(model)));
  const net = new Net(graph, engine);
  const shape = [batch, ...net.inputShape];
  const rng = makeRng(0);
  const xd = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng());
  const yd = Int32Array.from({ length: batch }, () => Math.floor(rng() * net.classes));
  const out = {} as Record<Workload, number>;
  const frozen = net.frozen();
  out.forward = batch / timeIt(() => frozen.logits(xd, batch), seconds);
  out.input_grad = batch / timeIt(() => frozen.lossGrad(xd, batch, { kind: 'ce', labels: yd }), seconds);
  const opt = new Optimizer({ name: 'sgd', lr: 0.01, momentum: 0.9, weightDecay: 1e-4 });
  let step = 0;
  const natural = makeObjective({ ...DEFAULT_OBJECTIVE, kind: 'natural' });
  out.natural_step = batch / timeIt(() => trainStep(net, natural, opt, xd, yd, shape, step++), seconds, TRAIN_WARMUP);
  const trades = makeObjective({ ...DEFAULT_OBJECTIVE, kind: 'trades', eps: 0.1, alpha: 0.01, steps: 10, beta: 6 });
  out.trades10_step = batch / timeIt(() => trainStep(net, trades, opt, xd, yd, shape, step++), seconds, TRAIN_WARMUP);
  weightHandling[model] = Object.fromEntries(Object.entries(net.weightHandling()).map(([k, v]) => [k, v === undefined ? 'undecided' : v ? 'baked' : 'fed']));
  net.dispose();
  graph.dispose();
  return out;
}

interface TorchResult { torch_version: string; threads: number; matmul_gflops?: number; isa?: { aten: string; onednn: string; openblas: string }; models: Record<string, Record<Workload, number>> }

function benchTorch(models: string[], batch: number): TorchResult | undefined {
  const py = '/usr/bin/python3';
  if (!fs.existsSync(py)) return undefined;
  const r = spawnSync(py, [path.join(packageRoot(), 'bench', 'torch_bench.py')], {
    encoding: 'utf8',
    env: torchEnv({ BENCH_BATCH: String(batch), BENCH_MODELS: models.join(','), BENCH_SECONDS: String(args.seconds) }),
  });
  if (r.status !== 0) {
    if (/No module named 'torch'/.test(r.stderr)) return undefined;
    process.stderr.write(`PyTorch benchmark failed: ${r.stderr.split('\n').slice(-3).join(' ')}\n`);
    return undefined;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TorchResult;
}

const models = args.models.split(',').map((m) => m.trim()).filter(Boolean);
const torchRuns: TorchResult[] = [];
if (args.torch) {
  const t = benchTorch(models, args.batch);
  if (t) torchRuns.push(t);
}
const ours: Record<string, Record<Workload, number>> = {};
for (const m of models) ours[m] = benchOurs(m, args.batch, args.seconds, args.backend as BackendChoice);
if (torchRuns.length) {
  const t = benchTorch(models, args.batch);
  if (t) torchRuns.push(t);
}
const engine = selectEngine(args.backend as BackendChoice);

interface Row { ours_img_s: number; torch_img_s: number | null; ratio: number | null }
const table: Record<string, Record<Workload, Row>> = {};
for (const m of models) {
  table[m] = {} as Record<Workload, Row>;
  for (const w of WORKLOADS) {
    const torch = torchRuns.length ? Math.max(...torchRuns.map((t) => t.models[m]?.[w] ?? 0)) : null;
    table[m][w] = { ours_img_s: ours[m]![w], torch_img_s: torch, ratio: torch ? ours[m]![w] / torch : null };
  }
}
const cpu = cpuInfo();
const result = {
  cpu,
  batch: args.batch,
  engine: engine.description,
  kernels: isaNote(args.isa),
  torch: torchRuns[0] ? { version: torchRuns[0].torch_version, threads: torchRuns[0].threads, matmulGflops: torchRuns[0].matmul_gflops, isa: torchRuns[0].isa, malloc: torchMallocNote() } : null,
  models: table,
  weight_handling: weightHandling,
  // the first model's rows at top level, as tools read them (e.g. trades10_step.ratio)
  ...table[models[0]!],
};
if (args.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
else {
  const lines = [`onnx-hydra bench: batch ${args.batch}, engine ${engine.description}`, `CPU: ${cpu.model}, ${cpu.cores} cores, ${cpu.isa.join(' ')}`, `kernels: ${result.kernels}`];
  lines.push(result.torch ? `PyTorch ${result.torch.version} (${result.torch.threads} threads, matrix product ${result.torch.matmulGflops?.toFixed(0) ?? '?'} GFLOP/s${result.torch.isa ? `; kernels: ATen ${result.torch.isa.aten}, oneDNN ${result.torch.isa.onednn}, OpenBLAS ${result.torch.isa.openblas}` : ''}; ${result.torch.malloc}), same machine, same run` : args.torch ? 'PyTorch not installed (apt-get install python3-torch): no ratios' : 'PyTorch not run (--no-torch): no ratios');
  if (result.torch && (result.torch.matmulGflops ?? Infinity) < 15) {
    lines.push(`warning: PyTorch's matrix products run at ${result.torch.matmulGflops!.toFixed(1)} GFLOP/s (the reference BLAS?): ratios of models with large Linear layers (the ViT) flatter onnx-hydra; apt-get install libopenblas0-pthread`);
  }
  lines.push('', '| model | workload | onnx-hydra img/s | PyTorch img/s | ratio |', '|---|---|---:|---:|---:|');
  for (const m of models) for (const w of WORKLOADS) {
    const r = table[m]![w];
    lines.push(`| ${m} | ${w} | ${r.ours_img_s.toFixed(0)} | ${r.torch_img_s?.toFixed(0) ?? '-'} | ${r.ratio ? `${r.ratio.toFixed(2)}x` : '-'} |`);
  }
  for (const m of models) {
    const h = Object.entries(weightHandling[m] ?? {});
    if (h.length) lines.push(`${m} weights (batch|mode… → baked or fed): ${h.map(([k, v]) => `${k} → ${v}`).join('; ')}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}
