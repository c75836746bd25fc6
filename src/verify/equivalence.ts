// `check`: does the tfjs graph compute what onnxruntime computes, before and after export?
import seedrandom from 'seedrandom';
import { tf } from '../tfjs/tf.js';
import { TfGraph, type PrepareOptions } from '../graph/graph.js';
import { isFloat } from '../onnx/tensor.js';
import type { OnnxModel } from '../onnx/model.js';
import { createSession, runSession } from '../runtime/ort.js';
import { OnnxError } from '../util/errors.js';

export interface CheckResult {
  samples: number;
  batch: number;
  input_shape: number[];
  max_abs_diff: number;
  argmax_agreement: number;
  export_max_abs_diff: number;
  max_abs_logit: number;
  tolerance: number;
  ok: boolean;
  backend: string;
  seconds: number;
}

/** The one float input a classifier has, with its concrete shape at `batch` when the batch is free. */
export function classifierInput(graph: TfGraph, batch: number): { name: string; shape: number[] } {
  const real = graph.inputs;
  if (real.length !== 1) throw new OnnxError(`expected a classifier with one input, the model has ${real.length} (${real.map((i) => `'${i.name}'`).join(', ')})`);
  const inp = real[0]!;
  if (!isFloat(inp.dtype)) throw new OnnxError(`input '${inp.name}' is ${inp.dtype}; onnx-hydra works on classifiers with a float input`);
  if (inp.shape.length < 2) throw new OnnxError(`input '${inp.name}' has shape [${inp.shape}]; expected a batch dimension and features`);
  return { name: inp.name, shape: inp.shape.map((d) => (d === 'N' ? batch : (d as number))) };
}

export async function checkModel(model: OnnxModel, opts: PrepareOptions & { samples?: number; seed?: number; batch?: number } = {}): Promise<CheckResult> {
  const t0 = performance.now();
  const graph = TfGraph.fromModel(model, opts);
  try {
    const { shape } = classifierInput(graph, opts.batch ?? 8);
    const rng = seedrandom(String(opts.seed ?? 0));
    const samples = opts.samples ?? 4;
    const session = await createSession(model);
    const exported = await createSession(graph.exportModel());
    let maxDiff = 0;
    let exportDiff = 0;
    let maxLogit = 0;
    let agree = 0;
    let rows = 0;
    for (let s = 0; s < samples; s++) {
      const data = new Float32Array(shape.reduce((p, d) => p * d, 1));
      for (let i = 0; i < data.length; i++) data[i] = rng();
      const ours = tf.tidy(() => {
        const y = graph.predict(tf.tensor(data, shape));
        return { data: y.dataSync() as Float32Array, shape: y.shape };
      });
      const [ref] = await runSession(session, [{ data, shape }]);
      const [exp] = await runSession(exported, [{ data, shape }]);
      if (ref!.data.length !== ours.data.length) throw new OnnxError(`tfjs output has shape [${ours.shape}], onnxruntime's [${ref!.shape}]`);
      for (let i = 0; i < ours.data.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(ours.data[i]! - ref!.data[i]!));
        exportDiff = Math.max(exportDiff, Math.abs(ours.data[i]! - exp!.data[i]!));
        maxLogit = Math.max(maxLogit, Math.abs(ref!.data[i]!));
      }
      const classes = ours.shape[ours.shape.length - 1] ?? 1;
      for (let r = 0; r < ours.data.length / classes; r++) {
        rows++;
        if (argmax(ours.data, r * classes, classes) === argmax(ref!.data, r * classes, classes)) agree++;
      }
    }
    await session.session.release();
    await exported.session.release();
    // onnxruntime computes float16 models in half precision (epsilon 2^-10): allow ~5 half-precision ulps
    const half = graph.inputs[0]!.dtype === 'float16';
    const tolerance = (half ? 5e-3 : 1e-4) * (1 + maxLogit);
    return {
      samples, batch: shape[0]!, input_shape: shape,
      max_abs_diff: maxDiff, argmax_agreement: rows ? agree / rows : 1, export_max_abs_diff: exportDiff,
      max_abs_logit: maxLogit, tolerance, ok: maxDiff <= tolerance && exportDiff <= tolerance,
      backend: tf.getBackend(), seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    graph.dispose();
  }
}

export function argmax(a: ArrayLike<number>, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[off + i]! > a[off + best]!) best = i;
  return best;
}

export interface ExportAgreement {
  n: number;
  /** fraction of examples where onnxruntime on the exported file predicts the same class as onnx-hydra's network */
  prediction_agreement: number;
  /** onnxruntime's accuracy with the exported file */
  ort_accuracy: number;
  max_abs_logit_diff: number;
  provider: string;
}

/** Run an exported model in onnxruntime-node on a dataset and compare with the logits onnx-hydra computed. */
export async function compareWithOrt(model: OnnxModel | Uint8Array | string, x: Float32Array, y: Int32Array, shape: [number, number, number], ours: (x: Float32Array, n: number) => Float32Array, o: { limit?: number; batch?: number } = {}): Promise<ExportAgreement> {
  const per = shape[0] * shape[1] * shape[2];
  const n = Math.min(o.limit ?? y.length, y.length);
  const batch = o.batch ?? 500;
  const s = await createSession(model);
  let agree = 0;
  let correct = 0;
  let maxDiff = 0;
  try {
    for (let from = 0; from < n; from += batch) {
      const m = Math.min(batch, n - from);
      const xs = x.subarray(from * per, (from + m) * per);
      const [ref] = await runSession(s, [{ data: xs, shape: [m, ...shape] }]);
      const mine = ours(xs, m);
      const k = ref!.data.length / m;
      for (let r = 0; r < m; r++) {
        const a = argmax(ref!.data, r * k, k);
        if (a === argmax(mine, r * k, k)) agree++;
        if (a === y[from + r]) correct++;
      }
      for (let i = 0; i < mine.length; i++) maxDiff = Math.max(maxDiff, Math.abs(mine[i]! - ref!.data[i]!));
    }
  } finally {
    await s.session.release();
  }
  return { n, prediction_agreement: n ? agree / n : 1, ort_accuracy: n ? correct / n : 0, max_abs_logit_diff: maxDiff, provider: s.provider };
}
