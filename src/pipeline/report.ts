// The run's report: report.json (every stage's numbers, and the delta dense → pruned → int8 of what ships)
// and a self-contained report.html (tables, and charts drawn by Chart.js, inlined so the file opens
// anywhere without a network).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import { writeFileAtomic } from '../util/fs.js';
import { sweepCombinations, variantName, type Recipe } from './recipe.js';
import type { RunState, StageRecord } from './runner.js';

interface VerifyLike {
  model: { file: string; quantized: boolean; bytes: number };
  data: { n: number };
  benign: { acc: number };
  pgd?: { acc: number; settings: { eps: number; steps: number } };
  square?: { acc: number };
  autoattack?: { acc: number; version: string };
  robust?: { acc: number; attacks: string[] };
  ibp?: { verified_acc: number; eps: number };
  crown?: { verified_acc: number; eps: number; alpha_steps?: number };
  smoothing?: { settings: { sigma: number }; certified: { radius: number; acc: number }[] };
  cost?: { macs: number; params: number; prunable_zeros: number; latency: { threads: number; batch1: { median_ms: number; p90_ms: number }; batchN: { batch: number; images_per_second: number } } };
}

interface EpochLike { epoch: number; lr: number; loss: number; train_acc: number; test_acc?: number; robust_acc?: number }

/** One row of the headline table: a file that was verified, and its change against the dense model. */
export interface HeadlineRow {
  stage: 'dense' | 'pruned' | 'int8';
  file: string;
  sparsity: number;
  benign: number;
  /** worst case over the attacks run (per example), or PGD alone */
  robust?: number;
  robust_attacks?: string[];
  certified?: { ibp?: { eps: number; acc: number }; crown?: { eps: number; acc: number; alpha: boolean }; smoothing?: { sigma: number; radius: number; acc: number }[] };
  bytes: number;
  gzip_bytes: number;
  macs?: number;
  params?: number;
  nonzero_params?: number;
  latency?: { batch1_median_ms: number; batch1_p90_ms: number; batch: number; images_per_second: number; threads: number };
  /** against the dense row: accuracy differences in points (pruned − dense), cost ratios (dense / this) */
  delta?: { benign_points: number; robust_points?: number; bytes_x: number; macs_x?: number; batch1_speedup?: number; throughput_x?: number };
}

export interface VariantSummary {
  variant: string;
  method?: string;
  sparsity?: number;
  /** what `sparsity` counts: weights (unstructured pruning) or the channels of the channel groups */
  unit?: 'weights' | 'channels';
  layers?: { name: string; params: number; zeros: number; sparsity: number; kept: number; kept_pct: number }[];
  /** channel pruning: channels kept per group */
  groups?: { group: number; producers: string[]; channels: number; kept: number; kept_pct: number }[];
  artifacts: { file: string; bytes: number; gzip_bytes: number; int8: boolean }[];
  verify: (VerifyLike & { judged: string })[];
  headline: HeadlineRow[];
  curves: { phase: string; epochs: EpochLike[] }[];
}

const read = <T>(f: string): T | undefined => (fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as T) : undefined);

function headlineRow(stage: HeadlineRow['stage'], v: VerifyLike & { judged: string }, sparsity: number, gzipBytes: number): HeadlineRow {
  const c = v.cost;
  return {
    stage, file: v.judged, sparsity,
    benign: v.benign.acc,
    robust: v.robust?.acc ?? v.pgd?.acc,
    robust_attacks: v.robust?.attacks ?? (v.pgd ? [`PGD-${v.pgd.settings.steps}`] : undefined),
    certified: v.ibp || v.crown || v.smoothing ? {
      ...(v.ibp ? { ibp: { eps: v.ibp.eps, acc: v.ibp.verified_acc } } : {}),
      ...(v.crown ? { crown: { eps: v.crown.eps, acc: v.crown.verified_acc, alpha: !!v.crown.alpha_steps } } : {}),
      ...(v.smoothing ? { smoothing: v.smoothing.certified.map((x) => ({ sigma: v.smoothing!.settings.sigma, radius: x.radius, acc: x.acc })) } : {}),
    } : undefined,
    bytes: v.model.bytes, gzip_bytes: gzipBytes,
    ...(c ? {
      macs: c.macs, params: c.params, nonzero_params: c.params - c.prunable_zeros,
      latency: { batch1_median_ms: c.latency.batch1.median_ms, batch1_p90_ms: c.latency.batch1.p90_ms, batch: c.latency.batchN.batch, images_per_second: c.latency.batchN.images_per_second, threads: c.latency.threads },
    } : {}),
  };
}

function withDelta(row: HeadlineRow, dense: HeadlineRow | undefined): HeadlineRow {
  if (!dense || row === dense) return row;
  const ratio = (a?: number, b?: number): number | undefined => (a !== undefined && b !== undefined && b > 0 ? a / b : undefined);
  return {
    ...row,
    delta: {
      benign_points: 100 * (row.benign - dense.benign),
      robust_points: row.robust !== undefined && dense.robust !== undefined ? 100 * (row.robust - dense.robust) : undefined,
      bytes_x: dense.bytes / row.bytes,
      macs_x: ratio(dense.macs, row.macs),
      batch1_speedup: ratio(dense.latency?.batch1_median_ms, row.latency?.batch1_median_ms),
      throughput_x: ratio(row.latency?.images_per_second, dense.latency?.images_per_second),
    },
  };
}

export interface SeedRepeats {
  /** the sweep combination without its seed, e.g. method-hydra_sparsity-0.75 */
  setting: string;
  seeds: number[];
  /** the pruned (float) file of each seed, in `seeds` order */
  benign: number[];
  robust: (number | null)[];
  benign_mean: number;
  benign_sd: number;
  robust_mean: number | null;
  robust_sd: number | null;
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
/** sample standard deviation (0 for one value) */
const sd = (xs: number[]): number => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));

/** With `seed` in the sweep: each other setting's pruned-file accuracies over the seeds, mean and spread. */
function seedRepeats(r: Recipe, summaries: VariantSummary[]): SeedRepeats[] {
  if (!r.sweep?.seed) return [];
  const out = new Map<string, SeedRepeats>();
  for (const combo of sweepCombinations(r)) {
    const { seed, ...rest } = combo;
    const row = summaries.find((s) => s.variant === variantName(combo))?.headline.find((h) => h.stage === 'pruned');
    if (!row) continue;
    const setting = variantName(rest);
    let e = out.get(setting);
    if (!e) out.set(setting, (e = { setting, seeds: [], benign: [], robust: [], benign_mean: 0, benign_sd: 0, robust_mean: null, robust_sd: null }));
    e.seeds.push(Number(seed));
    e.benign.push(row.benign);
    e.robust.push(row.robust ?? null);
  }
  for (const e of out.values()) {
    e.benign_mean = mean(e.benign);
    e.benign_sd = sd(e.benign);
    const robust = e.robust.filter((v): v is number => v !== null);
    if (robust.length === e.robust.length) [e.robust_mean, e.robust_sd] = [mean(robust), sd(robust)];
  }
  return [...out.values()];
}

export function buildReport(r: Recipe, state: RunState, outDir: string): { json: Record<string, unknown>; variants: VariantSummary[]; dense?: HeadlineRow; seeds: SeedRepeats[] } {
  // raw and gzip-compressed size of a file, compressed once (the headline and the artifacts, and every
  // variant of a sweep, share files)
  const sizes = new Map<string, { bytes: number; gzip_bytes: number }>();
  const sizeOf = (f: string): { bytes: number; gzip_bytes: number } => {
    let s = sizes.get(f);
    if (!s) {
      const b = fs.existsSync(f) ? fs.readFileSync(f) : Buffer.alloc(0);
      sizes.set(f, (s = { bytes: b.length, gzip_bytes: b.length ? zlib.gzipSync(b, { level: 9 }).length : 0 }));
    }
    return s;
  };
  const recs = Object.values(state.stages);
  const variants = [...new Set(recs.filter((s) => s.role !== 'dense').map((s) => s.variant))];
  const shared = recs.filter((s) => s.variant === '' && s.role !== 'dense');
  const firstPrune = recs.find((s) => s.kind === 'prune');
  // the dense model's verdict: the runner's own, or a verify stage of the recipe on the model entering pruning
  const denseRec = recs.find((s) => s.role === 'dense') ?? (firstPrune ? recs.find((s) => s.kind === 'verify' && s.input === firstPrune.input) : undefined);
  const denseVerify = denseRec ? read<VerifyLike>(denseRec.report) : undefined;
  const dense = denseVerify && denseRec ? headlineRow('dense', { ...denseVerify, judged: path.relative(outDir, denseRec.input) }, 0, sizeOf(denseRec.input).gzip_bytes) : undefined;
  const pretrain = shared.filter((s) => s.kind === 'pretrain').map((s) => read<{ history?: EpochLike[] }>(s.report)).pop();
  const summaries: VariantSummary[] = (variants.length > 1 ? variants.filter((v) => v) : variants).map((v) => {
    const mine: StageRecord[] = [...shared, ...recs.filter((s) => s.variant === v && v !== '' && s.role !== 'dense')];
    const pruneRec = mine.filter((s) => s.kind === 'prune').pop();
    const prune = pruneRec ? read<{
      method: string; structure?: string;
      // unstructured: per-layer zeros; channel: only the fraction of channels removed (groups under `channels`)
      sparsity: { sparsity: number; layers?: { name: string; params: number; zeros: number; sparsity: number }[] };
      channels?: { groups: { id: number; producers: string[]; channels: number; kept: number }[] };
      phases?: { name: string; history: EpochLike[] }[];
    }>(pruneRec.report) : undefined;
    const artifacts = mine.filter((s) => s.kind !== 'verify' && fs.existsSync(s.artifact)).map((s) => ({ file: path.relative(outDir, s.artifact), ...sizeOf(s.artifact), int8: s.kind === 'quantize' }));
    const verifyRecs = mine.filter((s) => s.kind === 'verify' && s !== denseRec);
    const verify = verifyRecs.map((s) => ({ ...read<VerifyLike>(s.report)!, judged: path.relative(outDir, s.input) }));
    const sparsity = prune?.sparsity.sparsity;
    const rows: HeadlineRow[] = dense ? [dense] : [];
    verifyRecs.forEach((s, i) => {
      const x = verify[i]!;
      // files after pruning (or all files, when nothing was pruned)
      if (pruneRec && !mine.slice(mine.indexOf(pruneRec)).includes(s)) return;
      rows.push(withDelta(headlineRow(x.model.quantized ? 'int8' : pruneRec ? 'pruned' : 'dense', x, sparsity ?? 0, sizeOf(s.input).gzip_bytes), dense));
    });
    const curves = [
      ...(pretrain?.history?.length ? [{ phase: 'pretrain', epochs: pretrain.history }] : []),
      ...(prune?.phases ?? []).filter((p) => p.history.length).map((p) => ({ phase: `${prune!.method} ${p.name}`, epochs: p.history })),
    ];
    return {
      variant: v || r.name, method: prune?.method, sparsity,
      unit: prune ? (prune.channels ? 'channels' : 'weights') : undefined,
      layers: prune?.sparsity.layers?.map((l) => ({ ...l, kept: l.params - l.zeros, kept_pct: l.params ? (l.params - l.zeros) / l.params : 0 })),
      groups: prune?.channels?.groups.map((g) => ({ group: g.id, producers: g.producers, channels: g.channels, kept: g.kept, kept_pct: g.channels ? g.kept / g.channels : 0 })),
      artifacts, verify, headline: rows, curves,
    };
  });
  const seeds = seedRepeats(r, summaries);
  const json = {
    recipe: r.name, description: r.description, model: r.model, data: r.data, seed: r.seed,
    started: state.started, finished: state.finished,
    headline: { dense, variants: summaries.map((s) => ({ variant: s.variant, rows: s.headline })) },
    ...(seeds.length ? { seeds } : {}),
    stages: recs.map((s) => ({ id: s.id, kind: s.kind, role: s.role, artifact: path.relative(outDir, s.artifact), seconds: s.seconds, resumed: s.resumed, report: read(s.report) })),
    variants: summaries,
  };
  return { json, variants: summaries, dense, seeds };
}

const esc = (s: unknown): string => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const pc = (v: number | undefined): string => (v === undefined ? '–' : `${(100 * v).toFixed(2)}%`);
const int = (v: number | undefined): string => (v === undefined ? '–' : Math.round(v).toLocaleString('en-US'));
const pts = (d: number | undefined): string => (d === undefined ? '' : `<span class="d">${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(2)}</span>`);
const same = (x: number): boolean => Math.abs(x - 1) < 0.005;
const times = (x: number | undefined): string => (x === undefined ? '' : `<span class="d">${same(x) ? 'same' : x >= 1 ? `${x.toFixed(2)}× less` : `${(1 / x).toFixed(2)}× more`}</span>`);
const faster = (x: number | undefined): string => (x === undefined ? '' : `<span class="d">${same(x) ? 'same' : x >= 1 ? `${x.toFixed(2)}× faster` : `${(1 / x).toFixed(2)}× slower`}</span>`);

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

function certifiedCell(c: HeadlineRow['certified']): string {
  if (!c) return '–';
  const parts: string[] = [];
  if (c.ibp) parts.push(`IBP ${pc(c.ibp.acc)} @ε ${c.ibp.eps}`);
  if (c.crown) parts.push(`${c.crown.alpha ? 'α-' : ''}CROWN ${pc(c.crown.acc)} @ε ${c.crown.eps}`);
  for (const s of c.smoothing ?? []) parts.push(`σ ${s.sigma}: ${pc(s.acc)} @${s.radius}`);
  return parts.join('<br>');
}

export function renderHtml(r: Recipe, variants: VariantSummary[], dense?: HeadlineRow, seeds: SeedRepeats[] = []): string {
  // the UMD build next to the package's main file (its exports map hides the path)
  const chartJs = fs.readFileSync(path.join(path.dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.js'), 'utf8');
  // headline: dense once, then each variant's pruned and int8 files with their change against dense
  const seenRows = new Set<string>();
  const headRows = variants.flatMap((v) => v.headline.filter((h) => !seenRows.has(h.file) && seenRows.add(h.file)).map((h) => `<tr><td>${esc(h.stage === 'dense' ? 'dense' : `${h.stage}${variants.length > 1 ? ` (${v.variant})` : ''}`)}</td><td>${esc(h.file)}</td><td>${pc(h.sparsity)}${h.stage !== 'dense' && v.unit === 'channels' ? ' of channels' : ''}</td>` +
    `<td>${pc(h.benign)} ${pts(h.delta?.benign_points)}</td><td>${pc(h.robust)} ${pts(h.delta?.robust_points)}</td><td>${certifiedCell(h.certified)}</td>` +
    `<td>${int(h.bytes)} ${times(h.delta?.bytes_x)}</td><td>${int(h.macs)} ${times(h.delta?.macs_x)}</td>` +
    `<td>${h.latency ? h.latency.batch1_median_ms.toFixed(3) : '–'} ${faster(h.delta?.batch1_speedup)}</td><td>${h.latency ? int(h.latency.images_per_second) : '–'} ${faster(h.delta?.throughput_x)}</td></tr>`));
  const attacks = [...new Set(variants.flatMap((v) => v.headline.flatMap((h) => h.robust_attacks ?? [])))];
  const lat = variants.flatMap((v) => v.headline).find((h) => h.latency)?.latency;
  const rows = variants.flatMap((v) => v.verify.map((x) => `<tr><td>${esc(v.variant)}</td><td>${esc(x.judged)}${x.model.quantized ? ' (int8)' : ''}</td><td>${v.sparsity !== undefined ? `${pc(v.sparsity)}${v.unit === 'channels' ? ' of channels' : ''}` : '0%'}</td><td>${pc(x.benign.acc)}</td><td>${pc(x.pgd?.acc)}</td><td>${pc(x.autoattack?.acc)}</td><td>${pc(x.square?.acc)}</td><td>${pc(x.ibp?.verified_acc)}</td><td>${pc(x.crown?.verified_acc)}</td><td>${x.smoothing?.certified.length ? x.smoothing.certified.map((c) => `${pc(c.acc)} @${c.radius}`).join('<br>') : '–'}</td><td>${x.model.bytes.toLocaleString('en-US')}</td></tr>`));
  // (artifacts shared by every variant of a sweep, such as the pretrained model, are listed once)
  const seen = new Set<string>();
  const arts = variants.flatMap((v) => v.artifacts.filter((a) => !seen.has(a.file) && seen.add(a.file)).map((a) => `<tr><td>${esc(variants.length > 1 && !a.file.includes('/') ? 'all' : v.variant)}</td><td>${esc(a.file)}</td><td>${a.bytes.toLocaleString('en-US')}</td><td>${a.gzip_bytes.toLocaleString('en-US')}</td></tr>`));

  // accuracy vs sparsity: every method's line starts at the dense model (0%); the float pruned file, or
  // the int8 one when only that was verified
  const floatRow = (v: VariantSummary) => v.headline.filter((h) => h.stage === 'pruned').pop() ?? v.headline.filter((h) => h.stage === 'int8').pop();
  const points = variants.filter((v) => v.sparsity !== undefined && floatRow(v)).map((v) => ({ method: v.method ?? '', s: v.sparsity!, row: floatRow(v)! }));
  const methods = [...new Set(points.map((p) => p.method))];
  const accData = {
    datasets: methods.flatMap((m, i) => {
      const mine = points.filter((p) => p.method === m).sort((a, b) => a.s - b.s);
      const line = (f: (h: HeadlineRow) => number | undefined) => [
        ...(dense && f(dense) !== undefined ? [{ x: 0, y: 100 * f(dense)! }] : []),
        ...mine.filter((p) => f(p.row) !== undefined).map((p) => ({ x: 100 * p.s, y: 100 * f(p.row)! })),
      ];
      const color = PALETTE[(2 * i) % PALETTE.length];
      return [
        { label: `${m} benign`, data: line((h) => h.benign), borderColor: color, backgroundColor: color },
        { label: `${m} robust (${attacks.join(' + ') || 'PGD'})`, data: line((h) => h.robust), borderColor: PALETTE[(2 * i + 1) % PALETTE.length], backgroundColor: PALETTE[(2 * i + 1) % PALETTE.length], borderDash: [5, 4] },
      ];
    }),
  };
  const cert = variants.flatMap((v) => v.verify.filter((x) => x.smoothing?.certified.length).map((x, i) => ({ label: `${v.variant} ${x.judged} σ ${x.smoothing!.settings.sigma}`, borderColor: PALETTE[i % PALETTE.length], data: x.smoothing!.certified.map((c) => ({ x: c.radius, y: 100 * c.acc })) })));
  // training curves: the shared pretraining once, then each variant's pruning phases
  const curveCharts: { id: string; title: string; data: unknown }[] = [];
  const seenPhase = new Set<string>();
  variants.forEach((v) => v.curves.forEach((c) => {
    const key = c.phase === 'pretrain' ? 'pretrain' : `${v.variant}/${c.phase}`;
    if (seenPhase.has(key)) return;
    seenPhase.add(key);
    const series = (label: string, f: (e: EpochLike) => number | undefined, color: string, axis: string, scale = 100) => {
      const data = c.epochs.filter((e) => f(e) !== undefined).map((e) => ({ x: e.epoch, y: scale * f(e)! }));
      return data.length ? [{ label, data, borderColor: color, backgroundColor: color, yAxisID: axis }] : [];
    };
    curveCharts.push({
      id: `curve${curveCharts.length}`,
      title: `Training curve: ${c.phase}${c.phase === 'pretrain' || variants.length === 1 ? '' : ` (${v.variant})`}`,
      data: { datasets: [
        ...series('loss', (e) => e.loss, '#444', 'loss', 1),
        ...series('train accuracy (%)', (e) => e.train_acc, PALETTE[0]!, 'acc'),
        ...series('test accuracy (%)', (e) => e.test_acc, PALETTE[2]!, 'acc'),
        ...series('test PGD-10 accuracy (%)', (e) => e.robust_acc, PALETTE[1]!, 'acc'),
      ] },
    });
  }));
  // kept weights per layer (count and percent) of the first pruned variant (all variants in the table)
  const layerV = variants.find((v) => v.layers?.length);
  const layers = layerV ? {
    labels: layerV.layers!.map((l) => `${l.name} (${l.kept.toLocaleString('en-US')} of ${l.params.toLocaleString('en-US')})`),
    datasets: [{ label: `${layerV.variant}: weights kept per layer (%)`, data: layerV.layers!.map((l) => 100 * l.kept_pct), backgroundColor: PALETTE[0] }],
  } : undefined;
  const layerRows = variants.flatMap((v) => (v.layers ?? []).map((l) => `<tr><td>${esc(v.variant)}</td><td>${esc(l.name)}</td><td>${int(l.params)}</td><td>${int(l.kept)}</td><td>${pc(l.kept_pct)}</td></tr>`));
  // channels kept per group of the first channel-pruned variant (all variants in the table)
  const groupV = variants.find((v) => v.groups?.length);
  const groups = groupV ? {
    labels: groupV.groups!.map((g) => `group ${g.group}: ${g.producers.join(', ')} (${g.kept} of ${g.channels})`),
    datasets: [{ label: `${groupV.variant}: channels kept per group (%)`, data: groupV.groups!.map((g) => 100 * g.kept_pct), backgroundColor: PALETTE[0] }],
  } : undefined;
  const groupRows = variants.flatMap((v) => (v.groups ?? []).map((g) => `<tr><td>${esc(v.variant)}</td><td>${g.group}: ${esc(g.producers.join(', '))}</td><td>${int(g.channels)}</td><td>${int(g.kept)}</td><td>${pc(g.kept_pct)}</td></tr>`));

  const charts: string[] = [];
  const canv = (id: string, title: string): string => `<h2>${esc(title)}</h2><div class="chart"><canvas id="${id}"></canvas></div>`;
  const pruned = variants.filter((v) => v.unit);
  const xLabel = pruned.length && pruned.every((v) => v.unit === 'channels') ? 'channels removed (%)' : 'sparsity (%)';
  if (points.length) charts.push(canv('acc', `Accuracy vs ${xLabel.replace(' (%)', '')} (onnxruntime-node on the exported files; 0% is the dense model)`));
  if (cert.length) charts.push(canv('cert', 'Certified accuracy vs L2 radius (randomized smoothing)'));
  for (const c of curveCharts) charts.push(canv(c.id, c.title));
  if (layers) charts.push(canv('layers', 'Weights kept per layer') + `<table><tr><th>run</th><th>layer</th><th>weights</th><th>kept</th><th>kept %</th></tr>${layerRows.join('')}</table>`);
  if (groups) charts.push(canv('groups', 'Channels kept per channel group (the exported files have the removed channels physically gone)') + `<table><tr><th>run</th><th>group: producers</th><th>channels</th><th>kept</th><th>kept %</th></tr>${groupRows.join('')}</table>`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onnx-hydra report: ${esc(r.name)}</title>
<style>body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}td:first-child,td:nth-child(2),th{text-align:left}
.d{display:block;color:#777;font-size:85%}.chart{position:relative;height:320px}h1{font-size:1.5em}code{background:#f4f4f4;padding:0 3px}</style></head>
<body><h1>onnx-hydra report: ${esc(r.name)}</h1>
<p>${esc(r.description ?? '')}</p>
<p>Model <code>${esc(r.model)}</code>, data <code>${esc(r.data)}</code>, seed ${r.seed}. Every accuracy and latency below comes from onnxruntime-node running the file named.</p>
<h2>What ships, against the dense model</h2>
<table id="headline"><tr><th>stage</th><th>file</th><th>sparsity</th><th>benign</th><th>robust${attacks.length ? ` (${esc(attacks.join(' + '))})` : ''}</th><th>certified</th><th>bytes</th><th>MACs / image</th><th>batch 1 ms (median)</th><th>batch ${lat?.batch ?? 64} img/s</th></tr>${headRows.join('')}</table>
<p class="d">Accuracy changes are in points against the dense row; robust accuracy is the per-example worst case over the attacks run.${lat ? ` Latency: onnxruntime-node CPU, ${lat.threads ? `${lat.threads} threads` : 'one thread per core'}, median of repeated runs after a warm-up.` : ''}</p>
${seeds.length ? `<h2>Repeats over seeds</h2>
<table id="seeds"><tr><th>setting</th><th>seeds</th><th>benign (mean ± sd)</th><th>robust (mean ± sd)</th><th>robust per seed</th></tr>${seeds.map((e) => `<tr><td>${esc(e.setting)}</td><td>${e.seeds.join(', ')}</td><td>${pc(e.benign_mean)} ± ${(100 * e.benign_sd).toFixed(2)}</td><td>${e.robust_mean === null ? '–' : `${pc(e.robust_mean)} ± ${(100 * e.robust_sd!).toFixed(2)}`}</td><td>${e.robust.map((v) => (v === null ? '–' : pc(v))).join(', ')}</td></tr>`).join('')}</table>
<p class="d">The pruned (float) file of each seed; the standard deviation is the sample one, in points.</p>` : ''}
<h2>Verification</h2>
<table id="verify"><tr><th>run</th><th>file</th><th>sparsity</th><th>benign</th><th>PGD</th><th>AutoAttack</th><th>Square</th><th>IBP verified</th><th>CROWN verified</th><th>smoothing certified @ L2 radius</th><th>bytes</th></tr>${rows.join('')}</table>
${charts.join('\n')}
<h2>Artifacts</h2>
<table><tr><th>run</th><th>file</th><th>bytes</th><th>gzip bytes</th></tr>${arts.join('')}</table>
<script>${chartJs}</script>
<script>
const draw = (id, data, xl, yl, type, extra) => { const el = document.getElementById(id); if (!el) return; new Chart(el, { type: type || 'line', data, options: Object.assign({ animation: false, maintainAspectRatio: false, scales: type === 'bar' ? { y: { min: 0, title: { display: true, text: yl } } } : { x: { type: 'linear', title: { display: true, text: xl } }, y: { title: { display: true, text: yl } } } }, extra || {}) }); };
draw('acc', ${JSON.stringify(accData)}, '${xLabel}', 'accuracy (%)', 'line', { scales: { x: { type: 'linear', min: 0, max: 100, title: { display: true, text: '${xLabel}' } }, y: { min: 0, max: 100, title: { display: true, text: 'accuracy (%)' } } } });
draw('cert', ${JSON.stringify({ datasets: cert })}, 'L2 radius', 'certified accuracy (%)');
${curveCharts.map((c) => `draw('${c.id}', ${JSON.stringify(c.data)}, 'epoch', '', 'line', { scales: { x: { type: 'linear', ticks: { stepSize: 1 }, title: { display: true, text: 'epoch' } }, acc: { position: 'left', min: 0, max: 100, title: { display: true, text: 'accuracy (%)' } }, loss: { position: 'right', grid: { drawOnChartArea: false }, title: { display: true, text: 'loss' } } } });`).join('\n')}
draw('layers', ${JSON.stringify(layers ?? { labels: [], datasets: [] })}, '', 'kept (%)', 'bar');
draw('groups', ${JSON.stringify(groups ?? { labels: [], datasets: [] })}, '', 'kept (%)', 'bar');
// how much of each chart is drawn in colour (data, not axes or text, which are grey): read by the report test
for (const c of document.querySelectorAll('canvas')) {
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 60) ink++;
  c.dataset.ink = String(ink);
}
document.body.dataset.rendered = 'yes';
</script></body></html>
`;
}

export function writeReports(r: Recipe, state: RunState, outDir: string): { json: string; html: string; report: ReturnType<typeof buildReport> } {
  const built = buildReport(r, state, outDir);
  const { json, variants, dense, seeds } = built;
  const jf = path.join(outDir, 'report.json');
  const hf = path.join(outDir, 'report.html');
  writeFileAtomic(jf, JSON.stringify(json, null, 2));
  writeFileAtomic(hf, renderHtml(r, variants, dense, seeds));
  return { json: jf, html: hf, report: built };
}
