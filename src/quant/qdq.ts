// 8-bit QDQ export: per-channel symmetric int8 weights (zeros stay exact zeros) and uint8 activations
// calibrated on sample inputs (min-max or percentile), as QuantizeLinear/DequantizeLinear pairs that
// onnxruntime fuses into integer kernels. Hand-written: onnxruntime's quantizer is Python-only.
import { cloneModel, type OnnxModel } from '../onnx/model.js';
import type { NodeProto, TensorProto } from '../onnx/proto.js';
import { decodeTensor, encodeTensor, hostTensor } from '../onnx/tensor.js';
import { createSession, runSession } from '../runtime/ort.js';
import { onnx } from '../onnx/proto.js';
import { densifySparse } from '../onnx/sparse.js';
import { UserError } from '../util/errors.js';
import { opSpec } from '../ops/index.js';

export { stripQdq } from '../onnx/qdq-float.js';
import type { Dataset } from '../data/index.js';

export interface QuantizeOptions {
  calibration: 'minmax' | 'percentile';
  /** percentile calibration: the range covers this percentile of |activation| values */
  percentile: number;
}

export interface QuantizeReport {
  weights: { name: string; node: string; channels: number; axis: number }[];
  activations: { name: string; min: number; max: number; scale: number; zero_point: number }[];
}

interface Target { node: NodeProto; weightInput: number; axis: number; act: string }

/** The nodes whose weights the int8 export quantizes (per output channel; each op's spec says which input and axis). */
function targets(model: OnnxModel): Target[] {
  const g = model.proto.graph!;
  const inits = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
  const isConst = (name: string): boolean => inits.has(name);
  const dims = (name: string): number[] => (inits.get(name)?.dims ?? []).map(Number);
  const out: Target[] = [];
  for (const n of g.node ?? []) {
    const t = opSpec(n.opType ?? '', n.domain ?? '')?.quant?.(n, isConst, dims);
    if (t) out.push({ node: n, ...t, act: n.input![0]! });
  }
  return out;
}

function percentileRange(values: Float32Array[], p: number): [number, number] {
  let n = 0;
  for (const v of values) n += v.length;
  // a strided sample of at most 2M values keeps sorting cheap
  const step = Math.max(1, Math.floor(n / 2e6));
  const sample: number[] = [];
  let k = 0;
  for (const v of values) for (let i = 0; i < v.length; i++, k++) if (k % step === 0) sample.push(v[i]!);
  const s = Float32Array.from(sample).sort();
  const at = (q: number): number => s[Math.min(s.length - 1, Math.max(0, Math.round((q / 100) * (s.length - 1))))]!;
  return [at(100 - p), at(p)];
}

/** The first n images of a dataset as calibration inputs for quantizeInt8. */
export function calibrationSet(d: Dataset, n: number): { x: Float32Array; shape: number[] } {
  const per = d.shape[0] * d.shape[1] * d.shape[2];
  return { x: d.x.subarray(0, n * per), shape: [n, ...d.shape] };
}

/** A QDQ copy of `model`; `calib` are sample inputs [n, ...] for the activation ranges. */
export async function quantizeInt8(source: OnnxModel, calib: { x: Float32Array; shape: number[] }, o: QuantizeOptions): Promise<{ model: OnnxModel; report: QuantizeReport }> {
  const model = densifySparse(source);
  if (model.opset < 13) throw new UserError(`--quantize int8 writes per-channel QuantizeLinear/DequantizeLinear, which needs opset ≥ 13; the model has opset ${model.opset} (re-export it with opset_version=13)`);
  const ts = targets(model);
  if (!ts.length) throw new UserError('--quantize int8: the model has no Conv/Gemm/MatMul with a constant weight to quantize');
  // activation ranges: the float model with every quantized activation as an extra output
  const acts = [...new Set(ts.map((t) => t.act))];
  const probe = cloneModel(model);
  const pg = probe.proto.graph!;
  const have = new Set((pg.output ?? []).map((v) => v.name));
  for (const a of acts) if (!have.has(a)) pg.output!.push({ name: a });
  const s = await createSession(probe);
  const per = calib.shape.slice(1).reduce((p, d) => p * d, 1);
  const n = calib.shape[0]!;
  const collected = new Map<string, Float32Array[]>(acts.map((a) => [a, []]));
  for (let from = 0; from < n; from += 256) {
    const m = Math.min(256, n - from);
    const res = await runSession(s, [{ data: calib.x.subarray(from * per, (from + m) * per), shape: [m, ...calib.shape.slice(1)] }]);
    s.outputNames.forEach((name, i) => collected.get(name)?.push(res[i]!.data));
  }
  await s.session.release();

  const out = cloneModel(model);
  const g = out.proto.graph!;
  const inits = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
  const newNodes: NodeProto[] = [];
  const report: QuantizeReport = { weights: [], activations: [] };
  const dq = new Map<string, string>();
  const addInit = (t: TensorProto): void => void g.initializer!.push(t);
  // activations: uint8 asymmetric, 0 exactly representable
  for (const a of acts) {
    const vals = collected.get(a)!;
    let lo: number;
    let hi: number;
    if (o.calibration === 'percentile') [lo, hi] = percentileRange(vals, o.percentile);
    else {
      lo = Infinity;
      hi = -Infinity;
      for (const v of vals) for (let i = 0; i < v.length; i++) (lo = Math.min(lo, v[i]!)), (hi = Math.max(hi, v[i]!));
    }
    lo = Math.min(0, lo);
    hi = Math.max(0, hi);
    const scale = hi > lo ? (hi - lo) / 255 : 1;
    const zp = Math.min(255, Math.max(0, Math.round(-lo / scale)));
    const sName = `${a}/act_scale`;
    const zName = `${a}/act_zero_point`;
    addInit(encodeTensor(sName, hostTensor('float32', [], [scale])));
    addInit(encodeTensor(zName, hostTensor('uint8', [], [zp])));
    const q = `${a}/quantized`;
    const d = `${a}/dequantized`;
    newNodes.push({ opType: 'QuantizeLinear', name: `${a}/QuantizeLinear`, input: [a, sName, zName], output: [q] });
    newNodes.push({ opType: 'DequantizeLinear', name: `${a}/DequantizeLinear`, input: [q, sName, zName], output: [d] });
    dq.set(a, d);
    report.activations.push({ name: a, min: lo, max: hi, scale, zero_point: zp });
  }
  // weights: per output channel, symmetric int8 in [−127, 127]
  const doneW = new Map<string, string>();
  for (const t of ts) {
    const wName = t.node.input![t.weightInput]!;
    if (!doneW.has(wName)) {
      const w = decodeTensor(inits.get(wName)!);
      const shape = w.shape;
      const data = w.data as Float32Array;
      const channels = shape[t.axis]!;
      const inner = shape.slice(t.axis + 1).reduce((p, d) => p * d, 1);
      const scales = new Float32Array(channels);
      for (let i = 0; i < data.length; i++) {
        const c = Math.floor(i / inner) % channels;
        scales[c] = Math.max(scales[c]!, Math.abs(data[i]!));
      }
      for (let c = 0; c < channels; c++) scales[c] = scales[c]! > 0 ? scales[c]! / 127 : 1;
      const q = new Int8Array(data.length);
      for (let i = 0; i < data.length; i++) q[i] = Math.max(-127, Math.min(127, Math.round(data[i]! / scales[Math.floor(i / inner) % channels]!)));
      const qName = `${wName}/int8`;
      const sName = `${wName}/scale`;
      const zName = `${wName}/zero_point`;
      g.initializer = g.initializer!.filter((x) => x.name !== wName);
      addInit(encodeTensor(qName, hostTensor('int8', shape, q)));
      addInit(encodeTensor(sName, hostTensor('float32', [channels], scales)));
      addInit(encodeTensor(zName, hostTensor('int8', [channels], new Int8Array(channels))));
      newNodes.push({ opType: 'DequantizeLinear', name: `${wName}/DequantizeLinear`, input: [qName, sName, zName], output: [wName], attribute: [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: t.axis }] });
      doneW.set(wName, wName);
      report.weights.push({ name: wName, node: t.node.name ?? t.node.opType ?? '', channels, axis: t.axis });
    }
  }
  // rewire the quantized nodes' activation inputs; keep topological order (QDQ nodes right after producers)
  const qNodes = new Set(ts.map((t) => t.node));
  for (const n of g.node ?? []) if (qNodes.has(n)) n.input = n.input!.map((v, i) => (i === 0 && dq.has(v) ? dq.get(v)! : v));
  const byProducer = new Map<string, NodeProto[]>();
  const front: NodeProto[] = [];
  const produced = new Set((g.node ?? []).flatMap((n) => n.output ?? []));
  for (const nn of newNodes) {
    const src = nn.input![0]!;
    if (produced.has(src)) byProducer.set(src, [...(byProducer.get(src) ?? []), nn]);
    else front.push(nn);
  }
  const ordered: NodeProto[] = [...front];
  for (const n of g.node ?? []) {
    ordered.push(n);
    for (const o2 of n.output ?? []) ordered.push(...(byProducer.get(o2) ?? []));
  }
  g.node = ordered;
  // value_info of replaced weights would now be stale: drop entries naming quantized tensors
  g.valueInfo = (g.valueInfo ?? []).filter((v) => !doneW.has(v.name ?? ''));
  // (old IR versions list initializers among the graph inputs)
  g.input = (g.input ?? []).filter((v) => !doneW.has(v.name ?? ''));
  return { model: out, report };
}
