// Verified accuracy from bounds: lower bounds of the margins z_y − z_j over the L∞ ball (∩ [0,1]), by IBP
// (class differences folded into the last linear layer) or CROWN, run as one ONNX graph on onnxruntime-node.
// An example is verified when every margin's lower bound is positive: no input in the ball changes its class.
import { crownMarginModel, marginBoundsModel } from '../engine/compile/compile.js';
import { BOUNDS_EPS, BOUNDS_SPEC } from '../engine/compile/bounds.js';
import type { TfGraph } from '../graph/graph.js';
import { createSession, type Provider } from '../runtime/ort.js';
import * as ort from 'onnxruntime-node';
import type { Progress } from '../util/progress.js';

export interface MarginBoundOptions {
  batch?: number;
  provider?: Provider;
  bar?: Progress;
  /** CROWN instead of IBP; `neurons`: the largest ReLU layer (per example) whose bounds get their own CROWN pass */
  crown?: { neurons: number };
  /** filled in with CROWN: ReLU layers bounded by CROWN and those left with IBP bounds */
  layers?: { crown: number; ibp: number };
}

/** Lower bounds of z_y − z_j ([n, classes], 0 at j = y) for the n images in x. */
export async function marginLowerBounds(graph: TfGraph, x: Float32Array, y: Int32Array, n: number, eps: number, o: MarginBoundOptions = {}): Promise<Float32Array> {
  const shape = graph.inputs[0]!.shape.slice(1) as number[];
  const per = shape.reduce((p, d) => p * d, 1);
  const outShape = graph.prepared.shapes.get(graph.outputs[0]!);
  const k = (outShape?.at(-1) as number) ?? 10;
  let batch = Math.min(o.batch ?? 256, Math.max(1, n));
  if (o.crown) {
    // a CROWN pass of a layer with m neurons carries 2m coefficient rows per example down to the input:
    // keep the largest coefficient tensor near 2^26 floats (256 MB)
    let rowsPerExample = k;
    let first = true;
    for (const node of graph.prepared.runNodes) {
      if (node.opType !== 'Relu') continue;
      // (the first ReLU layer usually keeps its exact interval bounds, see emitBounds)
      if (first) { first = false; continue; }
      const m = (graph.prepared.shapes.get(node.inputs[0]!) ?? []).slice(1).reduce((p: number, d) => p * (d as number), 1);
      if (m <= o.crown.neurons) rowsPerExample = Math.max(rowsPerExample, 2 * m);
    }
    const widest = Math.max(per, ...[...graph.prepared.shapes.values()].map((sh) => sh.slice(1).reduce((p: number, d) => p * (d as number), 1)));
    batch = Math.max(1, Math.min(batch, Math.floor(2 ** 26 / (rowsPerExample * widest))));
  }
  let model: Uint8Array;
  if (o.crown) {
    const c = crownMarginModel(graph.prepared, batch, o.crown.neurons);
    model = c.model;
    if (o.layers) Object.assign(o.layers, { crown: c.crownLayers, ibp: c.ibpLayers });
  } else model = marginBoundsModel(graph.prepared, batch);
  const s = await createSession(model, { provider: o.provider });
  const params: Record<string, ort.Tensor> = {};
  for (const name of s.inputNames) {
    const v = graph.variables.get(name);
    if (v) params[name] = new ort.Tensor('float32', v.dataSync() as Float32Array, v.shape);
  }
  const xName = graph.inputs[0]!.name;
  const out = new Float32Array(n * k);
  const xb = new Float32Array(batch * per);
  const spec = new Float32Array(batch * k * k);
  try {
    for (let from = 0; from < n; from += batch) {
      const m = Math.min(batch, n - from);
      xb.fill(0);
      xb.set(x.subarray(from * per, (from + m) * per));
      spec.fill(0);
      for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) {
        spec[(i * k + j) * k + y[from + i]!]! += 1;
        spec[(i * k + j) * k + j]! -= 1;
      }
      const feeds: Record<string, ort.Tensor> = {
        ...params,
        [xName]: new ort.Tensor('float32', xb, [batch, ...shape]),
        [BOUNDS_EPS]: new ort.Tensor('float32', Float32Array.of(eps), []),
        [BOUNDS_SPEC]: new ort.Tensor('float32', spec, [batch, k, k]),
      };
      const missing = s.inputNames.filter((nm) => !(nm in feeds));
      if (missing.length) throw new Error(`IBP graph inputs without values: ${missing.join(', ')}`);
      const res = await s.session.run(feeds);
      out.set((res[s.outputNames[0]!]!.data as Float32Array).subarray(0, m * k), from * k);
      o.bar?.update(from + m);
    }
  } finally {
    await s.session.release();
  }
  return out;
}

/** 1 where every margin lower bound of the example is > 0. */
export function verifiedFlags(lower: Float32Array, y: Int32Array, n: number, k: number): Uint8Array {
  const v = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let ok = 1;
    for (let j = 0; j < k; j++) if (j !== y[i] && !(lower[i * k + j]! > 0)) ok = 0;
    v[i] = ok;
  }
  return v;
}
