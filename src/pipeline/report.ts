// The run's report: report.json (every stage's numbers, the final artifact's verdict from onnxruntime-node)
// and a self-contained report.html (tables, and charts drawn by Chart.js, inlined so the file opens
// anywhere without a network).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import { writeFileAtomic } from '../util/fs.js';
import type { Recipe } from './recipe.js';
import type { RunState, StageRecord } from './runner.js';

interface VerifyLike {
  model: { file: string; quantized: boolean; bytes: number };
  data: { n: number };
  benign: { acc: number };
  pgd?: { acc: number; settings: { eps: number; steps: number } };
  square?: { acc: number };
  robust?: { acc: number };
  ibp?: { verified_acc: number; eps: number };
  smoothing?: { settings: { sigma: number }; certified: { radius: number; acc: number }[] };
}

export interface VariantSummary {
  variant: string;
  method?: string;
  sparsity?: number;
  layers?: { name: string; params: number; zeros: number; sparsity: number }[];
  artifacts: { file: string; bytes: number; gzip_bytes: number; int8: boolean }[];
  verify: (VerifyLike & { judged: string })[];
}

const read = <T>(f: string): T | undefined => (fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as T) : undefined);

export function buildReport(r: Recipe, state: RunState, outDir: string): { json: Record<string, unknown>; variants: VariantSummary[] } {
  const recs = Object.values(state.stages);
  const variants = [...new Set(recs.map((s) => s.variant))];
  const shared = recs.filter((s) => s.variant === '');
  const summaries: VariantSummary[] = (variants.length > 1 ? variants.filter((v) => v) : variants).map((v) => {
    const mine: StageRecord[] = [...shared, ...recs.filter((s) => s.variant === v && v !== '')];
    const prune = mine.filter((s) => s.kind === 'prune').map((s) => read<{ method: string; sparsity: { sparsity: number; layers: VariantSummary['layers'] } }>(s.report)).pop();
    const artifacts = mine.filter((s) => s.kind !== 'verify' && fs.existsSync(s.artifact)).map((s) => {
      const b = fs.readFileSync(s.artifact);
      return { file: path.relative(outDir, s.artifact), bytes: b.length, gzip_bytes: zlib.gzipSync(b, { level: 9 }).length, int8: s.kind === 'quantize' };
    });
    const verify = mine.filter((s) => s.kind === 'verify').map((s) => ({ ...read<VerifyLike>(s.report)!, judged: path.relative(outDir, s.input) }));
    return { variant: v || r.name, method: prune?.method, sparsity: prune?.sparsity.sparsity, layers: prune?.sparsity.layers, artifacts, verify };
  });
  const json = {
    recipe: r.name, description: r.description, model: r.model, data: r.data, seed: r.seed,
    started: state.started, finished: state.finished,
    stages: recs.map((s) => ({ id: s.id, kind: s.kind, artifact: path.relative(outDir, s.artifact), seconds: s.seconds, resumed: s.resumed, report: read(s.report) })),
    variants: summaries,
  };
  return { json, variants: summaries };
}

const esc = (s: unknown): string => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const pc = (v: number | undefined): string => (v === undefined ? '–' : `${(100 * v).toFixed(2)}%`);

export function renderHtml(r: Recipe, variants: VariantSummary[]): string {
  // the UMD build next to the package's main file (its exports map hides the path)
  const chartJs = fs.readFileSync(path.join(path.dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.js'), 'utf8');
  const rows = variants.flatMap((v) => v.verify.map((x) => `<tr><td>${esc(v.variant)}</td><td>${esc(x.judged)}${x.model.quantized ? ' (int8)' : ''}</td><td>${v.sparsity !== undefined ? pc(v.sparsity) : '0%'}</td><td>${pc(x.benign.acc)}</td><td>${pc(x.pgd?.acc)}</td><td>${pc(x.square?.acc)}</td><td>${pc(x.ibp?.verified_acc)}</td><td>${x.smoothing?.certified.length ? x.smoothing.certified.map((c) => `${pc(c.acc)} @${c.radius}`).join('<br>') : '–'}</td><td>${x.model.bytes.toLocaleString('en-US')}</td></tr>`));
  // (artifacts shared by every variant of a sweep, such as the pretrained model, are listed once)
  const seen = new Set<string>();
  const arts = variants.flatMap((v) => v.artifacts.filter((a) => !seen.has(a.file) && seen.add(a.file)).map((a) => `<tr><td>${esc(variants.length > 1 && !a.file.includes('/') ? 'all' : v.variant)}</td><td>${esc(a.file)}</td><td>${a.bytes.toLocaleString('en-US')}</td><td>${a.gzip_bytes.toLocaleString('en-US')}</td></tr>`));
  // chart data: accuracy vs sparsity (float models), certified accuracy vs radius, per-layer sparsity
  const floatVerify = (v: VariantSummary) => v.verify.filter((x) => !x.model.quantized).pop() ?? v.verify.at(-1);
  const bySparsity = variants.filter((v) => v.sparsity !== undefined && floatVerify(v)).map((v) => ({ label: v.variant, method: v.method ?? '', s: v.sparsity!, benign: floatVerify(v)!.benign.acc, pgd: floatVerify(v)!.pgd?.acc ?? null }));
  const methods = [...new Set(bySparsity.map((b) => b.method))];
  const accData = {
    datasets: methods.flatMap((m) => [
      { label: `${m} benign`, data: bySparsity.filter((b) => b.method === m).sort((a, b) => a.s - b.s).map((b) => ({ x: 100 * b.s, y: 100 * b.benign })) },
      { label: `${m} PGD`, data: bySparsity.filter((b) => b.method === m && b.pgd !== null).sort((a, b) => a.s - b.s).map((b) => ({ x: 100 * b.s, y: 100 * b.pgd! })), borderDash: [5, 4] },
    ]),
  };
  const cert = variants.flatMap((v) => v.verify.filter((x) => x.smoothing?.certified.length).map((x) => ({ label: `${v.variant} σ ${x.smoothing!.settings.sigma}`, data: x.smoothing!.certified.map((c) => ({ x: c.radius, y: 100 * c.acc })) })));
  const layerV = variants.find((v) => v.layers?.length);
  const layers = layerV ? { labels: layerV.layers!.map((l) => l.name), datasets: [{ label: `${layerV.variant}: sparsity per layer (%)`, data: layerV.layers!.map((l) => 100 * l.sparsity) }] } : undefined;
  const charts: string[] = [];
  const canv = (id: string, title: string): string => `<h2>${esc(title)}</h2><div class="chart"><canvas id="${id}"></canvas></div>`;
  if (bySparsity.length) charts.push(canv('acc', 'Accuracy vs sparsity (onnxruntime-node on the exported files)'));
  if (cert.length) charts.push(canv('cert', 'Certified accuracy vs L2 radius (randomized smoothing)'));
  if (layers) charts.push(canv('layers', 'Per-layer sparsity'));
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onnx-hydra report: ${esc(r.name)}</title>
<style>body{font:14px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,td:nth-child(2),th{text-align:left}
.chart{position:relative;height:320px}h1{font-size:1.5em}code{background:#f4f4f4;padding:0 3px}</style></head>
<body><h1>onnx-hydra report: ${esc(r.name)}</h1>
<p>${esc(r.description ?? '')}</p>
<p>Model <code>${esc(r.model)}</code>, data <code>${esc(r.data)}</code>, seed ${r.seed}. Every accuracy below comes from onnxruntime-node running the file named.</p>
<h2>Verification</h2>
<table id="verify"><tr><th>run</th><th>file</th><th>sparsity</th><th>benign</th><th>PGD</th><th>Square</th><th>IBP verified</th><th>smoothing certified @ L2 radius</th><th>bytes</th></tr>${rows.join('')}</table>
<h2>Artifacts</h2>
<table><tr><th>run</th><th>file</th><th>bytes</th><th>gzip bytes</th></tr>${arts.join('')}</table>
${charts.join('\n')}
<script>${chartJs}</script>
<script>
const line = (id, data, xl, yl, type) => { const el = document.getElementById(id); if (!el) return; new Chart(el, { type: type || 'line', data, options: { animation: false, maintainAspectRatio: false, scales: type === 'bar' ? {} : { x: { type: 'linear', title: { display: true, text: xl } }, y: { title: { display: true, text: yl } } } } }); };
line('acc', ${JSON.stringify(accData)}, 'sparsity (%)', 'accuracy (%)');
line('cert', ${JSON.stringify({ datasets: cert })}, 'L2 radius', 'certified accuracy (%)');
line('layers', ${JSON.stringify(layers ?? { labels: [], datasets: [] })}, '', '%', 'bar');
document.body.dataset.rendered = 'yes';
</script></body></html>
`;
}

export function writeReports(r: Recipe, state: RunState, outDir: string): { json: string; html: string; report: ReturnType<typeof buildReport> } {
  const built = buildReport(r, state, outDir);
  const { json, variants } = built;
  const jf = path.join(outDir, 'report.json');
  const hf = path.join(outDir, 'report.html');
  writeFileAtomic(jf, JSON.stringify(json, null, 2));
  writeFileAtomic(hf, renderHtml(r, variants));
  return { json: jf, html: hf, report: built };
}
