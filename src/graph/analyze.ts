// A description of any ONNX model (ours or not): structure, support, parameters and sparsity.
import { stripQdq } from '../onnx/qdq-float.js';
import { densifySparse } from '../onnx/sparse.js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { declaredElemType, declaredShape, encodeModel, realInputs, topoOrder, type Dim, type OnnxModel } from '../onnx/model.js';
import { toNum } from '../onnx/proto.js';
import { decodeTensor, dtypeFromCode, numel, type HostTensor } from '../onnx/tensor.js';
import { OnnxError } from '../util/errors.js';
import { PreparedGraph, findParams, type ParamRole } from './graph.js';
import { parseNode } from '../ops/ir.js';
import { countMacs } from './macs.js';
import { unsupportedReason } from '../ops/index.js';

export interface LayerInfo {
  name: string;
  op: string;
  node: string;
  role: ParamRole;
  shape: number[];
  params: number;
  zeros: number;
  sparsity: number;
  trainable: boolean;
  prunable: boolean;
}

export interface ModelSummary {
  file?: string;
  bytes: number;
  sha256: string;
  ir_version: number;
  producer: string;
  opsets: Record<string, number>;
  inputs: { name: string; dtype: string; shape: Dim[] }[];
  outputs: { name: string; dtype: string; shape: Dim[] }[];
  nodes: number;
  op_histogram: Record<string, number>;
  /** int8 QDQ: analysed (supported, parameters, sparsity) through the float graph */
  quantized: boolean;
  supported: boolean;
  unsupported: { op: string; node: string; reason?: string }[];
  /** why the graph could not be prepared, when the ops are supported but something else is wrong */
  error?: string;
  folded_nodes?: number;
  /** multiply-accumulates of one example's forward pass (Conv, ConvTranspose, Gemm, MatMul) */
  macs?: number;
  run_nodes?: number;
  parameters: { total: number; trainable: number; prunable: number; prunable_zeros: number };
  global_sparsity: number;
  layers: LayerInfo[];
}

export function sha256(bytes: Uint8Array): string {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

export function summarize(source: OnnxModel, opts: { inputShapes?: Record<string, number[]> } = {}): ModelSummary {
  const bytes = source.file && fs.existsSync(source.file) ? fs.readFileSync(source.file) : encodeModel(source);
  const dense = densifySparse(source);
  const hist: Record<string, number> = {};
  for (const n of dense.proto.graph!.node ?? []) hist[n.opType ?? ''] = (hist[n.opType ?? ''] ?? 0) + 1;
  // int8 QDQ models are analysed through their float graph (dequantised weights: the same zeros)
  let quantized = false;
  let model = dense;
  try {
    const st = stripQdq(dense);
    quantized = st.quantized;
    model = st.model;
  } catch {
    // Q/DQ that is not a QDQ pair: reported as unsupported ops below
  }
  const g = model.proto.graph!;
  const baseDir = model.file ? path.dirname(model.file) : undefined;
  const order = topoOrder(g.node ?? [], []);
  const nodes = order.map((i) => parseNode(g.node![i]!, i, baseDir));
  const unsupported = nodes
    .map((n) => ({ n, r: unsupportedReason(n, model.opset) }))
    .filter((x) => x.r)
    .map(({ n, r }) => ({ op: n.opType, node: n.name || `#${n.index}`, reason: r }));
  const inits = new Map<string, HostTensor>();
  for (const t of g.initializer ?? []) inits.set(t.name ?? '', decodeTensor(t, { baseDir, where: `initializer '${t.name}'` }));
  const params = findParams(nodes, inits);
  let total = 0;
  for (const t of inits.values()) if (t.dtype !== 'int64' && t.dtype !== 'int32') total += numel(t.shape);
  const layers: LayerInfo[] = [];
  let trainable = 0;
  let prunable = 0;
  let prunableZeros = 0;
  for (const p of params.values()) {
    const t = inits.get(p.name)!;
    let zeros = 0;
    for (let i = 0; i < t.data.length; i++) if (t.data[i] === 0) zeros++;
    const n = numel(t.shape);
    if (p.trainable) trainable += n;
    if (p.prunable) {
      prunable += n;
      prunableZeros += zeros;
    }
    layers.push({ name: p.name, op: p.opType, node: p.node, role: p.role, shape: t.shape, params: n, zeros, sparsity: n ? zeros / n : 0, trainable: p.trainable, prunable: p.prunable });
  }
  const vi = (v: NonNullable<typeof g.input>[number]) => {
    const code = declaredElemType(v);
    let dtype = 'unknown';
    try {
      if (code) dtype = dtypeFromCode(code, v.name ?? '');
    } catch {
      dtype = `type ${code}`;
    }
    return { name: v.name ?? '', dtype, shape: declaredShape(v) ?? [] };
  };
  const summary: ModelSummary = {
    file: model.file,
    bytes: bytes.length,
    sha256: sha256(bytes),
    ir_version: toNum(model.proto.irVersion),
    producer: `${model.proto.producerName ?? ''} ${model.proto.producerVersion ?? ''}`.trim(),
    opsets: Object.fromEntries([...model.opsets].map(([k, v]) => [k || 'ai.onnx', v])),
    inputs: realInputs(g).map(vi),
    outputs: (g.output ?? []).map(vi),
    nodes: dense.proto.graph!.node?.length ?? 0,
    op_histogram: hist,
    quantized,
    supported: unsupported.length === 0,
    unsupported,
    parameters: { total, trainable, prunable, prunable_zeros: prunableZeros },
    global_sparsity: prunable ? prunableZeros / prunable : 0,
    layers,
  };
  if (summary.supported) {
    try {
      const prep = new PreparedGraph(model, opts);
      summary.folded_nodes = prep.folded.length;
      summary.run_nodes = prep.runNodes.length;
      summary.macs = countMacs(prep).total;
    } catch (e) {
      if (!(e instanceof OnnxError)) throw e;
      summary.supported = false;
      summary.error = e.message;
    }
  }
  return summary;
}
