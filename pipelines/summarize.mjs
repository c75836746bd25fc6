// Table of the reports a pipeline wrote: node pipelines/summarize.mjs <dir>
import fs from 'node:fs';
import path from 'node:path';
const dir = process.argv[2] ?? '.';
const rows = [];
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.report.json')).sort()) {
  const r = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
  const secs = r.command === 'prune' ? r.phases.reduce((a, p) => a + p.seconds, 0) : r.history.reduce((a, h) => a + h.seconds, 0);
  rows.push([r.command === 'train' ? 'dense (pretrained)' : r.method, r.command === 'train' ? '0%' : `${(100 * r.sparsity.sparsity).toFixed(1)}%`,
    `${(100 * r.final.benign_acc).toFixed(2)}%`, r.final.pgd_acc !== undefined ? `${(100 * r.final.pgd_acc).toFixed(2)}%` : '-',
    `${(100 * r.export.onnxruntime.prediction_agreement).toFixed(1)}%`, (r.export.gzip_bytes ?? '-').toString(), secs.toFixed(0)]);
}
const head = ['model', 'sparsity', 'benign', 'PGD-20', 'ORT agrees', 'gzip bytes', 'train s'];
console.log(`| ${head.join(' | ')} |\n|${head.map(() => '---').join('|')}|\n${rows.map((r) => `| ${r.join(' | ')} |`).join('\n')}`);
