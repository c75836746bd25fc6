// npm run bench:verify [-- --json]: images/s of `verify`'s benign, PGD-20 and randomized-smoothing CERTIFY
// (σ 0.25, n0 100, n 10,000) on models/fashion_cnn.onnx, against the same evaluation in PyTorch (2 threads)
// in the same run. PyTorch runs before and after ours; its better run is used.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { loadData } from '../src/data/index.js';
import { packageRoot } from '../src/data/dataset.js';
import { verifyModel } from '../src/verify/verify.js';

const json = process.argv.includes('--json');
const N = { benign: 10000, pgd: 2000, smooth: 40, smoothN: 10000 };
const model = path.join(packageRoot(), 'models', 'fashion_cnn.onnx');

interface TorchOut { torch_version: string; threads: number; benign: { img_s: number; acc: number }; pgd20: { img_s: number; acc: number }; pgd20_early_stop: { img_s: number; acc: number }; smoothing: { img_s: number } }
function torch(): TorchOut | undefined {
  const r = spawnSync('/usr/bin/python3', [path.join(packageRoot(), 'bench', 'torch_verify_bench.py')], {
    encoding: 'utf8', env: { ...process.env, BENCH_BENIGN: String(N.benign), BENCH_PGD: String(N.pgd), BENCH_SMOOTH: String(N.smooth), BENCH_SMOOTH_N: String(N.smoothN) },
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
const t2 = t1 ? torch() : undefined;
const best = (f: (t: TorchOut) => number): number | null => (t1 ? Math.max(...[t1, t2].filter((t): t is TorchOut => !!t).map(f)) : null);
const rows = {
  benign: { ours_img_s: benign.benign.images_per_second, torch_img_s: best((t) => t.benign.img_s) },
  pgd20: { ours_img_s: pgd.pgd!.images_per_second, torch_img_s: best((t) => t.pgd20.img_s) },
  // the same early stopping in PyTorch (ours always stops early): the like-for-like algorithmic ratio
  pgd20_vs_torch_early_stop: { ours_img_s: pgd.pgd!.images_per_second, torch_img_s: best((t) => t.pgd20_early_stop.img_s) },
  smoothing_certify: { ours_img_s: smooth.smoothing!.images_per_second, torch_img_s: best((t) => t.smoothing.img_s) },
};
const result = {
  model: 'models/fashion_cnn.onnx', images: N, torch: t1 ? { version: t1.torch_version, threads: t1.threads } : null,
  accuracy: { ours_benign: benign.benign.acc, torch_benign: t1?.benign.acc ?? null, ours_pgd20: pgd.pgd!.acc, torch_pgd20: t1?.pgd20.acc ?? null, torch_pgd20_early_stop: t1?.pgd20_early_stop.acc ?? null },
  ...Object.fromEntries(Object.entries(rows).map(([k, r]) => [k, { ...r, ratio: r.torch_img_s ? r.ours_img_s / r.torch_img_s : null }])),
};
if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
else {
  const lines = ['onnx-hydra verify bench: models/fashion_cnn.onnx, Fashion-MNIST test images, onnxruntime-node CPU',
    t1 ? `PyTorch ${t1.torch_version} (${t1.threads} threads), same machine, same run` : 'PyTorch not installed: no ratios', '',
    '| workload | images | onnx-hydra img/s | PyTorch img/s | ratio |', '|---|---:|---:|---:|---:|'];
  const counts: Record<string, number> = { benign: N.benign, pgd20: N.pgd, pgd20_vs_torch_early_stop: N.pgd, smoothing_certify: N.smooth };
  for (const [k, r] of Object.entries(rows)) lines.push(`| ${k} | ${counts[k]} | ${r.ours_img_s.toFixed(1)} | ${r.torch_img_s?.toFixed(1) ?? '-'} | ${r.torch_img_s ? `${(r.ours_img_s / r.torch_img_s).toFixed(2)}x` : '-'} |`);
  process.stdout.write(`${lines.join('\n')}\n`);
}
