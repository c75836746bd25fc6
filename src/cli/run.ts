// `onnx-hydra run <recipe>`: a whole pipeline (pretrain → prune → quantize → verify) from a recipe, resumable.
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { loadRecipe } from '../pipeline/recipe.js';
import { runRecipe } from '../pipeline/runner.js';
import { writeReports } from '../pipeline/report.js';
import { pct, printJson, table } from './common.js';

type Args = Record<string, unknown> & { recipe: string };

/** randomized smoothing: certified accuracy at L2 radius 0.5 (or the largest radius below it) */
function certifiedAt(x: { smoothing?: { certified: { radius: number; acc: number }[] } }): string {
  const c = x.smoothing?.certified.filter((r) => r.radius <= 0.5).pop();
  return c ? `${pct(c.acc, 1)} @${c.radius}` : '-';
}

export const runCommand: CommandModule<object, Args> = {
  command: 'run <recipe>',
  describe: 'run a pipeline recipe (YAML/JSON): every stage\'s artifact, log and report in one folder; a second call resumes',
  builder: (y) =>
    y
      .positional('recipe', { type: 'string', demandOption: true, describe: 'recipe file, e.g. pipelines/fashion-mnist-hydra.yaml' })
      .option('out', { type: 'string', describe: 'run folder (default: runs/<recipe name>)' })
      .option('restart', { type: 'boolean', default: false, describe: 'ignore what an earlier run in --out finished' })
      .option('check', { type: 'boolean', default: false, describe: 'only validate the recipe' })
      .option('json', { type: 'boolean', default: false, describe: 'print report.json instead of the summary' }) as never,
  handler: async (a) => {
    const r = loadRecipe(a.recipe);
    const out = (a.out as string | undefined) ?? path.join('runs', r.name);
    if (a.check) {
      process.stdout.write(a.json ? `${JSON.stringify({ ok: true, recipe: r }, null, 2)}\n` : `${a.recipe}: ok (${r.stages.map((s) => s.kind).join(' → ')}${r.sweep ? `, sweep over ${Object.keys(r.sweep).join(', ')}` : ''})\n`);
      return;
    }
    const state = await runRecipe(r, a.recipe, out, { restart: !!a.restart });
    const files = writeReports(r, state, out);
    const { json, variants, seeds } = files.report;
    if (a.json) return void printJson(json);
    const rows = variants.flatMap((v) => v.verify.map((x) => [v.variant, x.judged + (x.model.quantized ? ' (int8)' : ''), v.sparsity !== undefined ? pct(v.sparsity, 1) : '0%', pct(x.benign.acc, 2), x.pgd ? pct(x.pgd.acc, 2) : '-', x.autoattack ? pct(x.autoattack.acc, 2) : '-', x.square ? pct(x.square.acc, 2) : '-', x.ibp ? pct(x.ibp.verified_acc, 2) : '-', x.crown ? pct(x.crown.verified_acc, 2) : '-', certifiedAt(x), x.model.bytes]));
    // the headline: dense → pruned → int8, with the change against dense
    const seen = new Set<string>();
    const sign = (d: number | undefined): string => (d === undefined ? '' : ` (${d >= 0 ? '+' : ''}${d.toFixed(2)})`);
    const ratio = (x: number | undefined): string => (x === undefined ? '' : ` (${x.toFixed(2)}x)`);
    const head = variants.flatMap((v) => v.headline.filter((h) => !seen.has(h.file) && seen.add(h.file)).map((h) => [
      h.stage, h.file, pct(h.sparsity, 1), pct(h.benign, 2) + sign(h.delta?.benign_points), h.robust !== undefined ? pct(h.robust, 2) + sign(h.delta?.robust_points) : '-',
      h.bytes.toLocaleString('en-US') + ratio(h.delta?.bytes_x), h.macs !== undefined ? h.macs.toLocaleString('en-US') + ratio(h.delta?.macs_x) : '-',
      h.latency ? h.latency.batch1_median_ms.toFixed(3) + ratio(h.delta?.batch1_speedup) : '-', h.latency ? h.latency.images_per_second.toFixed(0) + ratio(h.delta?.throughput_x) : '-',
    ]));
    const spread = (m: number | null, s: number | null): string => (m === null ? '-' : `${pct(m, 2)} ± ${(100 * s!).toFixed(2)}`);
    const seedRows = seeds.map((e) => [e.setting, e.seeds.join(', '), spread(e.benign_mean, e.benign_sd), spread(e.robust_mean, e.robust_sd), e.robust.map((v) => (v === null ? '-' : pct(v, 2))).join(', ')]);
    process.stdout.write(`${r.name}: ${out}\n\n` +
      (head.length ? table(['stage', 'file', 'sparsity', 'benign (Δ points)', 'robust (Δ points)', 'bytes (dense/this)', 'MACs (dense/this)', 'batch-1 ms (speed-up)', 'batch-64 img/s (speed-up)'], head) + '\n\n' : '') +
      table(['run', 'file', 'sparsity', 'benign', 'PGD', 'AutoAttack', 'Square', 'IBP', 'CROWN', 'certified', 'bytes'], rows) + '\n\n' +
      (seedRows.length ? `pruned files over the seeds (mean ± sample standard deviation, points):\n${table(['setting', 'seeds', 'benign', 'robust', 'robust per seed'], seedRows)}\n\n` : '') +
      `  ${files.json}\n  ${files.html}\n`);
  },
};
