// npm run bench:verify [-- --json | --json-file FILE] [--isa avx2]: images/s of `verify`'s benign, PGD-20,
// randomized-smoothing CERTIFY (σ 0.25, n0 100, n 10,000) and AutoAttack (ε 0.1 L∞: 'fast' = APGD-CE +
// APGD-T, 'standard' = + FAB-T + Square-5000) on models/fashion_cnn.onnx, against the same evaluation in
// PyTorch (bench/torch_verify_bench.py, the same weights, all cores) in the same run. PyTorch runs before and
// after ours; its better run is used. --json prints the JSON instead of the tables; --json-file writes it
// to FILE as well as printing the tables. The AutoAttack rows also give both robust accuracies: the two
// implementations draw different random numbers, so they agree within a few points, not exactly. The
// machine (CPU model, cores, ISA flags) and the load average at the start and the end are printed with the
// numbers: other jobs on the machine slow both sides, PyTorch's spinning OpenMP threads (GNU OpenMP's
// default wait policy) several-fold more than onnxruntime's.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadData } from '../src/data/index.js';
import { packageRoot } from '../src/data/dataset.js';
import { cpuInfo } from '../src/runtime/cpu.js';
import { torchEnv, torchMallocNote } from './torch-env.js';
import { applyIsaLimit, isaNote, type IsaLimit } from './isa.js';
import { verifyModel } from '../src/verify/verify.js';

const json = process.argv.includes('--json');
const jsonFileAt = process.argv.indexOf('--json-file');
const jsonFile = jsonFileAt >= 0 ? process.argv[jsonFileAt + 1] : undefined;
if (jsonFileAt >= 0 && !jsonFile) throw new Error('--json-file needs a file name');
const isaAt = process.argv.indexOf('--isa');
const isa = (isaAt >= 0 ? process.argv[isaAt + 1] : 'native') as IsaLimit;
applyIsaLimit(isa);
const N = { benign: 10000, pgd: 2000, smooth: 40, smoothN: 10000, aaFast: 500, aaStandard: 100 };
const AA_EPS = 0.1;
const model = path.join(packageRoot(), 'models', 'fashion_cnn.onnx');
const cpu = cpuInfo();
const loadStart = os.loadavg();

interface TorchAttackRow { attack: string; broken: number; acc_after: number; seconds: number }
interface TorchAutoAttack { img_s: number; seconds: number; n: number; clean_acc: number; acc: number; per_attack: TorchAttackRow[] }
interface TorchOut {
  torch_version: string; threads: number; omp_wait_policy?: string;
  benign: { img_s: number; acc: number }; pgd20: { img_s: number; acc: number }; pgd20_early_stop: { img_s: number; acc: number }; smoothing: { img_s: number };
  autoattack_fast?: TorchAutoAttack; autoattack_standard?: TorchAutoAttack;
}
function torch(): TorchOut | undefined {
  const r = spawnSync('/usr/bin/python3', [path.join(packageRoot(), 'bench', 'torch_verify_bench.py')], {
    encoding: 'utf8',
    env: torchEnv({
      BENCH_BENIGN: String(N.benign), BENCH_PGD: String(N.pgd), BENCH_SMOOTH: String(N.smooth), BENCH_SMOOTH_N: String(N.smoothN),
      BENCH_AA_FAST: String(N.aaFast), BENCH_AA_STANDARD: String(N.aaStandard), BENCH_AA_EPS: String(AA_EPS),
    }),
  });
  if (r.status !== 0) {
    process.stderr.write(`PyTorch side skipped: ${r.stderr.split('\n').filter(Boolean).slice(-1)[0] ?? r.error?.message}\n`);
    return undefined;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TorchOut;
}

const t1 = torch();
const data = loadData('fashion-mnist');
const common = { model, data: data.test, dataSpec: data.spec, batch: 256, provider: 'cpu' as const, backend: 'auto' as const, quiet: true, seed: 0 };
const benign = await verifyModel({ ...common, limit: N.benign });
const pgd = await verifyModel({ ...common, limit: N.pgd, pgd: { eps: 0.1, alpha: 0.0125, steps: 20, restarts: 1, norm: 'linf', randomStart: true } });
const smooth = await verifyModel({ ...common, limit: N.smooth, smoothing: { sigma: 0.25, n0: 100, n: N.smoothN, alpha: 0.001, batch: 1000, radii: [0], mode: 'certify' } });
const aaFast = (await verifyModel({ ...common, limit: N.aaFast, autoattack: { eps: AA_EPS, norm: 'linf', version: 'fast' } })).autoattack!;
const aaStandard = (await verifyModel({ ...common, limit: N.aaStandard, autoattack: { eps: AA_EPS, norm: 'linf', version: 'standard' } })).autoattack!;
const t2 = t1 ? torch() : undefined;
const loadEnd = os.loadavg();
const runs = [t1, t2].filter((t): t is TorchOut => !!t);
const best = (f: (t: TorchOut) => number | undefined): number | null => {
  const v = runs.map(f).filter((x): x is number => x !== undefined);
  return v.length ? Math.max(...v) : null;
};

interface Row { images: number; ours_img_s: number; torch_img_s: number | null; ours_acc?: number; torch_acc?: number | null }
const rows: Record<string, Row> = {
  benign: { images: N.benign, ours_img_s: benign.benign.images_per_second, torch_img_s: best((t) => t.benign.img_s), ours_acc: benign.benign.acc, torch_acc: t1?.benign.acc ?? null },
  pgd20: { images: N.pgd, ours_img_s: pgd.pgd!.images_per_second, torch_img_s: best((t) => t.pgd20.img_s), ours_acc: pgd.pgd!.acc, torch_acc: t1?.pgd20.acc ?? null },
  // the same early stopping in PyTorch (ours always stops early): the like-for-like algorithmic ratio
  pgd20_vs_torch_early_stop: { images: N.pgd, ours_img_s: pgd.pgd!.images_per_second, torch_img_s: best((t) => t.pgd20_early_stop.img_s), ours_acc: pgd.pgd!.acc, torch_acc: t1?.pgd20_early_stop.acc ?? null },
  smoothing_certify: { images: N.smooth, ours_img_s: smooth.smoothing!.images_per_second, torch_img_s: best((t) => t.smoothing.img_s) },
  // robust accuracy: AutoAttack's (clean-correct and unbroken by every attack of the version)
  autoattack_fast: { images: N.aaFast, ours_img_s: aaFast.images_per_second, torch_img_s: best((t) => t.autoattack_fast?.img_s), ours_acc: aaFast.acc, torch_acc: t1?.autoattack_fast?.acc ?? null },
  autoattack_standard: { images: N.aaStandard, ours_img_s: aaStandard.images_per_second, torch_img_s: best((t) => t.autoattack_standard?.img_s), ours_acc: aaStandard.acc, torch_acc: t1?.autoattack_standard?.acc ?? null },
};
const ratio = (r: Row): number | null => (r.torch_img_s ? r.ours_img_s / r.torch_img_s : null);
const aaDetail = (ours: typeof aaFast, key: 'autoattack_fast' | 'autoattack_standard', images: number) => ({
  images, eps: ours.eps, norm: ours.norm, attacks: ours.attacks,
  ours: { clean_acc: ours.clean_acc, acc: ours.acc, seconds: ours.seconds, per_attack: ours.per_attack.map(({ attack, broken, acc_after, seconds }) => ({ attack, broken, acc_after, seconds })) },
  // every run of PyTorch, in order (before ours, after ours): their accuracies are equal (fixed seeds)
  torch: runs.map((t) => t[key]).filter((t): t is TorchAutoAttack => !!t).map(({ clean_acc, acc, seconds, per_attack }) => ({ clean_acc, acc, seconds, per_attack })),
});
const result = {
  model: 'models/fashion_cnn.onnx', images: N,
  machine: { cpu: cpu.model, cores: cpu.cores, isa: cpu.isa, load_average_start: loadStart, load_average_end: loadEnd, kernels: isaNote(isa) },
  torch: t1 ? { version: t1.torch_version, threads: t1.threads, omp_wait_policy: t1.omp_wait_policy ?? null, malloc: torchMallocNote(), runs: runs.length } : null,
  accuracy: {
    ours_benign: benign.benign.acc, torch_benign: t1?.benign.acc ?? null, ours_pgd20: pgd.pgd!.acc, torch_pgd20: t1?.pgd20.acc ?? null, torch_pgd20_early_stop: t1?.pgd20_early_stop.acc ?? null,
    ours_autoattack_fast: aaFast.acc, torch_autoattack_fast: t1?.autoattack_fast?.acc ?? null,
    ours_autoattack_standard: aaStandard.acc, torch_autoattack_standard: t1?.autoattack_standard?.acc ?? null,
  },
  ...Object.fromEntries(Object.entries(rows).map(([k, r]) => [k, { ours_img_s: r.ours_img_s, torch_img_s: r.torch_img_s, ratio: ratio(r), ...(r.ours_acc !== undefined ? { ours_acc: r.ours_acc, torch_acc: r.torch_acc } : {}) }])),
  autoattack: { fast: aaDetail(aaFast, 'autoattack_fast', N.aaFast), standard: aaDetail(aaStandard, 'autoattack_standard', N.aaStandard) },
};
if (jsonFile) fs.writeFileSync(jsonFile, `${JSON.stringify(result, null, 2)}\n`);
if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
else {
  const pct = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : `${(100 * v).toFixed(1)}%`);
  const load = (l: number[]): string => l.map((v) => v.toFixed(2)).join(' ');
  const lines = ['onnx-hydra verify bench: models/fashion_cnn.onnx, Fashion-MNIST test images, onnxruntime-node CPU',
    `CPU: ${cpu.model}, ${cpu.cores} logical cores, ISA: ${cpu.isa.join(' ') || 'none of avx2/fma/avx512/vnni/amx'}; load average (1, 5, 15 min) ${load(loadStart)} at the start, ${load(loadEnd)} at the end`,
    `kernels: ${isaNote(isa)}`,
    t1 ? `PyTorch ${t1.torch_version} (${t1.threads} threads, OMP_WAIT_POLICY ${t1.omp_wait_policy ?? 'default'}, ${torchMallocNote()}), same machine, same run, better of ${runs.length} runs` : 'PyTorch not installed: no ratios',
    `AutoAttack: ε ${AA_EPS} L∞; fast = APGD-CE + APGD-T (9 targets); standard = + FAB-T (9 targets) + Square-5000; acc = robust accuracy`, '',
    '| workload | images | onnx-hydra img/s | PyTorch img/s | ratio | acc onnx-hydra | acc PyTorch |', '|---|---:|---:|---:|---:|---:|---:|'];
  for (const [k, r] of Object.entries(rows)) {
    const q = ratio(r);
    lines.push(`| ${k} | ${r.images} | ${r.ours_img_s.toFixed(1)} | ${r.torch_img_s?.toFixed(1) ?? '-'} | ${q ? `${q.toFixed(2)}x` : '-'} | ${pct(r.ours_acc)} | ${r.ours_acc === undefined ? '-' : pct(r.torch_acc)} |`);
  }
  lines.push('', '| AutoAttack | attack | broken onnx-hydra | broken PyTorch | acc after onnx-hydra | acc after PyTorch | s onnx-hydra | s PyTorch (best) |', '|---|---|---:|---:|---:|---:|---:|---:|');
  for (const [v, ours, key] of [['fast', aaFast, 'autoattack_fast'], ['standard', aaStandard, 'autoattack_standard']] as const) {
    for (const a of ours.per_attack) {
      const th = runs.map((t) => t[key]?.per_attack.find((p) => p.attack === a.attack)).filter((p): p is TorchAttackRow => !!p);
      const t0 = th[0];
      lines.push(`| ${v} | ${a.attack} | ${a.broken} | ${t0?.broken ?? '-'} | ${pct(a.acc_after)} | ${pct(t0?.acc_after)} | ${a.seconds.toFixed(1)} | ${th.length ? Math.min(...th.map((p) => p.seconds)).toFixed(1) : '-'} |`);
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}
