// Table of the reports a pipeline wrote (train/prune reports, and `verify` reports of the exported files
// when present): node pipelines/summarize.mjs <dir>
import fs from 'node:fs';
import path from 'node:path';
const dir = process.argv[2] ?? '.';
const read = (f) => (fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : undefined);
const pc = (v) => (v === undefined ? '-' : `${(100 * v).toFixed(2)}%`);
const rows = [];
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.onnx.report.json')).sort()) {
  const r = read(path.join(dir, f));
  const onnx = path.join(dir, f.replace(/\.report\.json$/, ''));
  const v20 = read(`${onnx}.verify.json`);
  const v10 = read(`${onnx}.verify-pgd10.json`);
  const ref = read(`${onnx}.torch-eval.json`);
  const secs = r.command === 'prune' ? r.phases.reduce((a, p) => a + p.seconds, 0) : r.history.reduce((a, h) => a + h.seconds, 0);
  rows.push([r.command === 'train' ? 'dense (pretrained)' : r.method, r.command === 'train' ? '0%' : `${(100 * r.sparsity.sparsity).toFixed(1)}%`,
    pc(v20?.benign.acc ?? r.final.benign_acc), pc(v20?.pgd?.acc ?? r.final.pgd_acc), pc(v10?.pgd?.acc), ref ? `${pc(ref.benign)} / ${pc(ref.pgd)}` : '-',
    String(r.export.gzip_bytes ?? '-'), secs.toFixed(0)]);
}
const order = (m) => (m.startsWith('dense') ? 0 : 1);
rows.sort((a, b) => order(a[0]) - order(b[0]) || a[1].localeCompare(b[1]) || a[0].localeCompare(b[0]));
const head = ['model', 'sparsity', 'benign', 'PGD-20', 'PGD-10', 'reference evaluator: benign / PGD-10', 'gzip bytes', 'train s'];
console.log(`| ${head.join(' | ')} |\n|${head.map(() => '---').join('|')}|\n${rows.map((r) => `| ${r.join(' | ')} |`).join('\n')}`);
