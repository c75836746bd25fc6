// Verified accuracy from bounds: lower bounds of the margins z_y − z_j over the L∞ ball (∩ [0,1]), by IBP
// (class differences folded into the last linear layer) or CROWN, run as one ONNX graph on onnxruntime-node.
// An example is verified when every margin's lower bound is positive: no input in the ball changes its class.
import { alphaCrownModel, crownMarginModel, marginBoundsModel } from '../engine/compile/compile.js';
import { BOUNDS_EPS, BOUNDS_SPEC } from '../engine/compile/bounds.js';
import type { TfGraph } from '../graph/graph.js';
import { createSession, type Provider } from '../runtime/ort.js';
import * as ort from 'onnxruntime-node';
import type { Progress } from '../util/progress.js';

export interface MarginBoundOptions {
  batch?: number;
  provider?: Provider;
  bar?: Progress;
  /**
   * CROWN instead of IBP; `neurons`: the largest ReLU layer (per example) whose bounds get their own CROWN
   * pass; `alpha`: α-CROWN, the ReLU lower slopes optimised by this many steps of Adam on the margin bounds
   */
  crown?: { neurons: number; alpha?: { steps: number; lr: number } };
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
  let model: Uint8Array;
  if (o.crown) {
    // a CROWN pass carries its coefficient rows per example down to the input: keep the largest
    // coefficient tensor near 2^26 floats (256 MB); the graph built for one example says how many rows
    const { rowsPerExample } = crownMarginModel(graph.prepared, 1, o.crown.neurons);
    const widest = Math.max(per, ...[...graph.prepared.shapes.values()].map((sh) => sh.slice(1).reduce((p: number, d) => p * (d as number), 1)));
    batch = Math.max(1, Math.min(batch, Math.floor(2 ** 26 / (rowsPerExample * widest))));
    const c = crownMarginModel(graph.prepared, batch, o.crown.neurons);
    model = c.model;
    if (o.layers) Object.assign(o.layers, { crown: c.crownLayers, ibp: c.ibpLayers });
  } else model = marginBoundsModel(graph.prepared, batch);
  const s = await createSession(model, { provider: o.provider });
  const alpha = o.crown?.alpha && o.crown.alpha.steps > 0 ? { ...alphaCrownModel(graph.prepared, batch, o.crown.neurons), session: undefined as unknown as Awaited<ReturnType<typeof createSession>> } : undefined;
  if (alpha) alpha.session = await createSession(alpha.model, { provider: o.provider });
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
      const bounds = (res[s.outputNames[0]!]!.data as Float32Array).slice(0, batch * k);
      if (alpha) await optimiseSlopes(alpha, feeds, bounds, y.subarray(from, from + m), m, k, o.crown!.alpha!);
      out.set(bounds.subarray(0, m * k), from * k);
      o.bar?.update(from + m);
    }
  } finally {
    await s.session.release();
    await alpha?.session.session.release();
  }
  return out;
}

/**
 * α-CROWN's optimisation for one batch: Adam ascent of the unverified margins' bounds over the ReLU lower
 * slopes (starting at CROWN's adaptive slopes, clipped to [0,1]); `bounds` keeps, per margin, the best bound seen (every
 * iterate's bound is sound, so their maximum is).
 */
async function optimiseSlopes(
  alpha: ReturnType<typeof alphaCrownModel> & { session: Awaited<ReturnType<typeof createSession>> },
  feeds: Record<string, ort.Tensor>, bounds: Float32Array, y: Int32Array, m: number, k: number, c: { steps: number; lr: number },
): Promise<void> {
  const slopes = alpha.alphaInputs.map((a) => new Float32Array(a.shape.reduce((p, d) => p * d, 1)).fill(0.5));
  const moment1 = slopes.map((v) => new Float32Array(v.length));
  const moment2 = slopes.map((v) => new Float32Array(v.length));
  const weights = new Float32Array(bounds.length);
  const [beta1, beta2] = [0.9, 0.999];
  for (let step = 1; step <= c.steps + 1; step++) {
    // raise the bounds of the margins not yet proven (all of an example's other classes count)
    weights.fill(0);
    let open = 0;
    for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) if (j !== y[i] && !(bounds[i * k + j]! > 0)) { weights[i * k + j] = 1; open++; }
    if (!open) return;
    const f: Record<string, ort.Tensor> = { ...feeds, 'bounds/dmargins': new ort.Tensor('float32', weights, [bounds.length / k, k]) };
    alpha.alphaInputs.forEach((a, i) => (f[a.name] = new ort.Tensor('float32', slopes[i]!, a.shape)));
    const res = await alpha.session.session.run(f);
    if (step === 1) {
      // start from CROWN's adaptive slopes (read off this first run), then optimise
      alpha.alphaInputs.forEach((_, a) => slopes[a]!.set(res[alpha.session.outputNames[1 + alpha.alphaInputs.length + a]!]!.data as Float32Array));
      continue;
    }
    const got = res[alpha.session.outputNames[0]!]!.data as Float32Array;
    for (let i = 0; i < m * k; i++) if (got[i]! > bounds[i]!) bounds[i] = got[i]!;
    alpha.alphaInputs.forEach((_, a) => {
      const grad = res[alpha.session.outputNames[1 + a]!]!.data as Float32Array;
      const v = slopes[a]!;
      const m1 = moment1[a]!;
      const m2 = moment2[a]!;
      for (let e = 0; e < v.length; e++) {
        m1[e] = beta1 * m1[e]! + (1 - beta1) * grad[e]!;
        m2[e] = beta2 * m2[e]! + (1 - beta2) * grad[e]! * grad[e]!;
        const t = step - 1;
        const step1 = (c.lr * (m1[e]! / (1 - beta1 ** t))) / (Math.sqrt(m2[e]! / (1 - beta2 ** t)) + 1e-8);
        v[e] = Math.min(1, Math.max(0, v[e]! + step1));
      }
    });
  }
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
