// The float graph of a QDQ (int8) model, so that a quantized file can be converted, attacked and
// verified: a transformation of the ONNX model alone, used by every stage that reads artifacts.
import { cloneModel, type OnnxModel } from './model.js';
import type { NodeProto } from './proto.js';
import { decodeTensor, encodeTensor, hostTensor } from './tensor.js';
import { densifySparse } from './sparse.js';
import { UserError } from '../util/errors.js';

/**
 * The float graph of a QDQ model, for gradients (straight-through quantisation): DequantizeLinear of a
 * constant becomes its float value (the exact dequantised weights), and QuantizeLinear→DequantizeLinear
 * pairs on activations become identities (forward and backward). Models without Q/DQ come back unchanged.
 */
export function stripQdq(sparse: OnnxModel): { model: OnnxModel; quantized: boolean; weights: number; activations: number } {
  const source = densifySparse(sparse);
  const g0 = source.proto.graph!;
  if (!(g0.node ?? []).some((n) => n.opType === 'QuantizeLinear' || n.opType === 'DequantizeLinear')) return { model: sparse, quantized: false, weights: 0, activations: 0 };
  const model = cloneModel(source);
  const g = model.proto.graph!;
  const inits = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
  const producer = new Map<string, NodeProto>();
  for (const n of g.node ?? []) for (const o of n.output ?? []) producer.set(o, n);
  const rename = new Map<string, string>();
  const drop = new Set<NodeProto>();
  let weights = 0;
  let activations = 0;
  const label = (n: NodeProto): string => `${n.opType} node '${n.name ?? ''}'`;
  for (const n of g.node ?? []) {
    if (n.opType !== 'DequantizeLinear') continue;
    const [xq, sName, zName] = n.input ?? [];
    const axisAttr = (n.attribute ?? []).find((a) => a.name === 'axis');
    if (inits.has(xq ?? '')) {
      const q = decodeTensor(inits.get(xq!)!);
      const s = decodeTensor(inits.get(sName ?? '') ?? (() => { throw new UserError(`${label(n)}: scale '${sName}' is not a constant`); })());
      const z = zName && inits.has(zName) ? decodeTensor(inits.get(zName)!) : undefined;
      const rank = q.shape.length;
      const axis = s.data.length > 1 ? ((Number(axisAttr?.i ?? 1) % rank) + rank) % rank : 0;
      const inner = q.shape.slice(axis + 1).reduce((p, d) => p * d, 1);
      const ch = s.data.length > 1 ? q.shape[axis]! : 1;
      const out = new Float32Array(q.data.length);
      for (let i = 0; i < out.length; i++) {
        const c = ch > 1 ? Math.floor(i / inner) % ch : 0;
        out[i] = (Number(q.data[i]) - (z ? Number(z.data[c]) : 0)) * Number(s.data[c]);
      }
      g.initializer!.push(encodeTensor(n.output![0]!, hostTensor('float32', q.shape, out)));
      drop.add(n);
      weights++;
      continue;
    }
    const qn = producer.get(xq ?? '');
    if (qn?.opType !== 'QuantizeLinear') throw new UserError(`${label(n)}: dequantizes '${xq}', which is neither a constant nor a QuantizeLinear output; cannot build the float graph for gradients`);
    rename.set(n.output![0]!, qn.input![0]!);
    drop.add(n);
    activations++;
  }
  const used = new Set<string>();
  for (const n of g.node ?? []) if (!drop.has(n)) for (const i of n.input ?? []) used.add(i);
  for (const n of g.node ?? []) {
    if (n.opType === 'QuantizeLinear' && !(n.output ?? []).some((o) => used.has(o))) drop.add(n);
  }
  const resolve = (v: string): string => {
    let r = v;
    while (rename.has(r)) r = rename.get(r)!;
    return r;
  };
  g.node = (g.node ?? []).filter((n) => !drop.has(n)).map((n) => ({ ...n, input: (n.input ?? []).map(resolve) }));
  const left = g.node.find((n) => n.opType === 'QuantizeLinear' || n.opType === 'DequantizeLinear');
  if (left) throw new UserError(`${label(left)}: quantisation that is not a QDQ pair; cannot build the float graph for gradients`);
  // graph outputs that were DequantizeLinear outputs keep their names through an Identity
  for (const o of g.output ?? []) {
    const r = resolve(o.name ?? '');
    if (r !== o.name) g.node.push({ opType: 'Identity', name: `${o.name}/ste`, input: [r], output: [o.name!] });
  }
  const needed = new Set(g.node.flatMap((n) => n.input ?? []));
  g.initializer = (g.initializer ?? []).filter((t) => needed.has(t.name ?? '') || !inits.has(t.name ?? '') || (g.output ?? []).some((o) => o.name === t.name));
  g.valueInfo = (g.valueInfo ?? []).filter((v) => !rename.has(v.name ?? ''));
  return { model, quantized: true, weights, activations };
}
