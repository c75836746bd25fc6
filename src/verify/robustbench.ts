// A RobustBench-style model entry (the fields of robustbench/model_info/<dataset>/<threat>/<model>.json) from
// a verify report with AutoAttack, plus where the numbers come from. Fields RobustBench takes from the
// paper (link, authors, venue, reported) are unknown here and left null for the author to fill in.
import path from 'node:path';
import type { OnnxModel } from '../onnx/model.js';
import { toNum } from '../onnx/proto.js';
import type { AutoAttackResult } from './autoattack.js';

export interface RobustBenchEntry {
  link: string | null;
  name: string;
  authors: string | null;
  additional_data: boolean;
  number_forward_passes: number;
  dataset: string;
  venue: string | null;
  architecture: string;
  eps: string;
  clean_acc: string;
  reported: string | null;
  autoattack_acc: string;
  footnote: string;
  unreliable: boolean;
  threat_model: 'Linf' | 'L2';
  n_examples: number;
  evaluation: {
    tool: string;
    model_file: string;
    model_sha256: string;
    autoattack_version: string;
    attacks: string[];
    per_attack: { attack: string; acc_after: string; skipped?: string }[];
    judged_by: string;
  };
}

/** Shape plumbing and constants: left out of the architecture's op summary. */
const PLUMBING = new Set(['Constant', 'Shape', 'Gather', 'Unsqueeze', 'Squeeze', 'Concat', 'Reshape', 'Flatten', 'Identity', 'Cast', 'QuantizeLinear', 'DequantizeLinear']);

/** "graph 'main_graph' (pytorch 1.13.0): Conv×2 Relu×3 Gemm×2, 166,406 parameters" */
export function describeArchitecture(model: OnnxModel): string {
  const g = model.proto.graph!;
  const hist = new Map<string, number>();
  for (const n of g.node ?? []) if (!PLUMBING.has(n.opType ?? '')) hist.set(n.opType ?? '', (hist.get(n.opType ?? '') ?? 0) + 1);
  const ops = [...hist].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([op, c]) => `${op}×${c}`).join(' ');
  let params = 0;
  for (const t of g.initializer ?? []) {
    const dt = t.dataType ?? 0;
    if (dt === 6 || dt === 7) continue; // int32 / int64: shapes and indices, not weights
    params += (t.dims ?? []).reduce((a: number, d) => a * toNum(d), 1);
  }
  const producer = `${model.proto.producerName ?? ''} ${model.proto.producerVersion ?? ''}`.trim();
  const quantized = (g.node ?? []).some((n) => n.opType === 'QuantizeLinear' || n.opType === 'DequantizeLinear');
  return `ONNX graph '${g.name || 'unnamed'}'${producer ? ` (${producer})` : ''}${quantized ? ', int8 QDQ' : ''}: ${ops || 'no compute ops'}, ${params.toLocaleString('en-US')} parameters`;
}

/** ε as RobustBench writes it: a short decimal, or k/255 when that is what it is. */
export function formatEps(eps: number): string {
  const short = String(+eps.toPrecision(4));
  if (Number(short) === eps) return short;
  const k = Math.round(eps * 255);
  return k > 0 && Math.abs(k / 255 - eps) < 1e-9 ? `${k}/255` : String(eps);
}

const pct2 = (v: number): string => (100 * v).toFixed(2);

export function robustBenchEntry(o: {
  model: OnnxModel; file: string; sha256: string; dataset: string; n: number; cleanAcc: number; aa: AutoAttackResult;
}): RobustBenchEntry {
  const aa = o.aa;
  const skipped = aa.per_attack.filter((r) => r.skipped);
  const notes = [
    `AutoAttack '${aa.version}' (${aa.attacks.join(', ')}) by onnx-hydra on the ONNX file as onnxruntime-node runs it, first ${o.n} test images`,
    ...(aa.version !== 'standard' ? ['not the standard version RobustBench uses'] : []),
    ...skipped.map((r) => `${r.attack} did not run: ${r.skipped}`),
  ];
  return {
    link: null,
    name: path.basename(o.file).replace(/\.onnx$/i, ''),
    authors: null,
    additional_data: false,
    number_forward_passes: 1,
    dataset: o.dataset,
    venue: null,
    architecture: describeArchitecture(o.model),
    eps: formatEps(aa.eps),
    clean_acc: pct2(o.cleanAcc),
    reported: null,
    autoattack_acc: pct2(aa.acc),
    footnote: `${notes.join('; ')}.`,
    unreliable: false,
    threat_model: aa.norm === 'linf' ? 'Linf' : 'L2',
    n_examples: o.n,
    evaluation: {
      tool: 'onnx-hydra verify --autoattack',
      model_file: o.file,
      model_sha256: o.sha256,
      autoattack_version: aa.version,
      attacks: aa.attacks,
      per_attack: aa.per_attack.map((r) => ({ attack: r.attack, acc_after: pct2(r.acc_after), ...(r.skipped ? { skipped: r.skipped } : {}) })),
      judged_by: aa.judged_by,
    },
  };
}
