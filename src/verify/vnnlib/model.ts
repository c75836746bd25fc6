// A VNN-COMP model as the property checker uses it: onnxruntime on the file (the judge: every counterexample
// is confirmed by it), onnx-hydra's engine on the same graph (gradients for the attack) and the bound graphs
// over input boxes. VNN-COMP files often fix the batch dimension to 1; the engine then runs a copy whose
// batch dimension is free, kept only when it computes what onnxruntime computes on the file.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { loadModel, declaredShape, realInputs, cloneModel, type OnnxModel } from '../../onnx/model.js';
import { stripQdq } from '../../quant/qdq.js';
import { decodeTensor, encodeTensor, numberAt } from '../../onnx/tensor.js';
import { TfGraph } from '../../graph/graph.js';
import { Net } from '../../engine/net.js';
import { selectEngine, type BackendChoice } from '../../engine/select.js';
import { createSession, runSession, type OrtSession, type Provider } from '../../runtime/ort.js';
import { sha256 } from '../../graph/analyze.js';
import { makeRng } from '../../util/rng.js';
import { UserError } from '../../util/errors.js';
import { BoxBounds } from './box-bounds.js';

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** examples per engine call (attack restarts, samples) when the batch dimension is free */
const ENGINE_BATCH = 32;

/** A file's bytes; `name.gz` (VNN-COMP benchmarks ship compressed files) is read when given or when `name` is missing. */
export function readMaybeGzipped(file: string, what: string): Buffer {
  let f = file;
  if (!fs.existsSync(f) && fs.existsSync(`${f}.gz`)) f = `${f}.gz`;
  if (!fs.existsSync(f)) throw new UserError(`${what} '${file}' not found`);
  if (fs.statSync(f).isDirectory()) throw new UserError(`${what} '${file}' is a folder`);
  const bytes = fs.readFileSync(f);
  if (!f.endsWith('.gz')) return bytes;
  try {
    return zlib.gunzipSync(bytes);
  } catch (e) {
    throw new UserError(`${what} '${f}' is not valid gzip: ${(e as Error).message}`);
  }
}

/**
 * The model with its input's (and outputs') leading dimension 1 made a free batch dimension, and constant
 * Reshape targets that start with that 1 (e.g. [1, -1], [1, 5]) made to copy it (0). Whether the result
 * computes per example what the file computes is checked by running it (engineDisagreement).
 */
function withFreeBatch(m: OnnxModel): OnnxModel {
  const c = cloneModel(m);
  const g = c.proto.graph!;
  for (const v of [...realInputs(g), ...(g.output ?? [])]) {
    const d0 = v.type?.tensorType?.shape?.dim?.[0];
    if (d0 && Number(d0.dimValue ?? 0) === 1) {
      d0.dimValue = undefined;
      d0.dimParam = 'N';
    }
  }
  const inits = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
  const constants = new Map((g.node ?? []).filter((n) => n.opType === 'Constant').map((n) => [n.output?.[0] ?? '', n.attribute?.find((a) => a.name === 'value')?.t]));
  for (const n of g.node ?? []) {
    const target = n.input?.[1];
    if (n.opType !== 'Reshape' || !target || n.attribute?.some((a) => a.name === 'allowzero' && Number(a.i) === 1)) continue;
    const t = inits.get(target) ?? constants.get(target);
    if (!t) continue;
    const h = decodeTensor(t);
    if (h.dtype !== 'int64' || h.shape.length !== 1 || !h.data.length || numberAt(h, 0) !== 1) continue;
    const name = `${target}/batch_copied`;
    if (!inits.has(name)) {
      const data = (h.data as BigInt64Array).slice();
      data[0] = 0n;
      const copied = encodeTensor(name, { ...h, data });
      (g.initializer ??= []).push(copied);
      inits.set(name, copied);
    }
    n.input![1] = name;
  }
  return c;
}

export interface VnnEngine {
  net: Net;
  graph: TfGraph;
  /** examples per engine call (1 when the engine's graph has a fixed batch of 1) */
  batch: number;
  /** example shape (without the batch dimension) */
  exampleShape: number[];
}

export class VnnModel {
  readonly warnings: string[] = [];
  /** bound graphs by their maximum number of boxes per call */
  private readonly boxBoundsBySlots = new Map<number, BoxBounds>();
  /** why there are no bound graphs (set once boxBounds() failed) */
  boundsUnavailable?: string;

  private constructor(
    readonly file: string,
    readonly sha256: string,
    private readonly session: OrtSession,
    /** the shape onnxruntime is fed (batch 1 included) */
    readonly inputShape: number[],
    readonly outputShape: number[],
    readonly engine: VnnEngine | undefined,
    /** why there is no engine (gradients, bounds) */
    readonly engineUnavailable: string | undefined,
    readonly quantized: boolean,
  ) {}

  get inputs(): number {
    return numel(this.inputShape);
  }
  get outputs(): number {
    return numel(this.outputShape);
  }

  static async open(file: string, o: { provider?: Provider; backend?: BackendChoice } = {}): Promise<VnnModel> {
    const bytes = new Uint8Array(readMaybeGzipped(file, 'model file'));
    let model: OnnxModel;
    try {
      model = loadModel(bytes);
    } catch (e) {
      throw new UserError(`${file}: ${(e as Error).message.replace(/^the buffer /, '')}`);
    }
    const inputs = realInputs(model.proto.graph!);
    if (inputs.length !== 1) throw new UserError(`${file}: expected a model with one input, it has ${inputs.length}`);
    const declared = declaredShape(inputs[0]!);
    if (!declared) throw new UserError(`${file}: the input '${inputs[0]!.name}' has no declared shape`);
    const inputShape = declared.map((d, i) => {
      if (typeof d === 'number') return d;
      if (i === 0) return 1;
      throw new UserError(`${file}: the input has a free dimension '${d}' at axis ${i}; VNN-LIB needs a fixed input size`);
    });
    if (typeof declared[0] === 'number' && declared[0] !== 1) throw new UserError(`${file}: the input's first dimension must be the batch (1 or free), the shape is [${declared}]`);
    const session = await createSession(bytes, { provider: o.provider });
    let outputShape: number[];
    try {
      const [y] = await runSession(session, [{ data: new Float32Array(numel(inputShape)), shape: inputShape }]);
      outputShape = y!.shape;
    } catch (e) {
      await session.session.release();
      throw new UserError(`${file}: onnxruntime-node cannot run the model on an input of shape [${inputShape}]: ${(e as Error).message.split('\n')[0]}`);
    }
    const stripped = stripQdq(model);
    let engine: VnnEngine | undefined;
    let why: string | undefined;
    const judge = async (x: Float32Array): Promise<Float32Array> => (await runSession(session, [{ data: x, shape: inputShape }]))[0]!.data;
    const candidates = declared[0] === 1 ? [withFreeBatch(stripped.model), stripped.model] : [stripped.model];
    for (const m of candidates) {
      let graph: TfGraph | undefined;
      let net: Net | undefined;
      try {
        graph = TfGraph.fromModel(m);
        net = new Net(graph, selectEngine(o.backend ?? 'auto'));
        const batch = graph.prepared.batchFree ? ENGINE_BATCH : 1;
        const exampleShape = graph.inputs[0]!.shape.slice(1) as number[];
        if (numel(exampleShape) !== numel(inputShape)) throw new UserError(`the engine's input has ${numel(exampleShape)} elements, the file's ${numel(inputShape)}`);
        const disagreement = await engineDisagreement(net, batch, exampleShape, judge);
        if (disagreement === undefined) {
          engine = { net, graph, batch, exampleShape };
          break;
        }
        why = disagreement;
      } catch (e) {
        // (the engine is optional: whatever stops it, onnxruntime still judges every candidate)
        why = (e as Error).message.split('\n')[0]!;
      }
      net?.dispose();
      graph?.dispose();
    }
    const vm = new VnnModel(file, sha256(bytes), session, inputShape, outputShape, engine, engine ? undefined : why, stripped.quantized);
    if (session.outputNames.length > 1) vm.warnings.push(`the model has ${session.outputNames.length} outputs; Y_j index the first, '${session.outputNames[0]}'`);
    if (!engine) vm.warnings.push(`onnx-hydra's engine cannot run this model (${why}): no gradients and no bounds, only random sampling on onnxruntime`);
    if (stripped.quantized) vm.warnings.push('int8 QDQ model: the attack uses its float graph, and bounds of the float graph are no proof for the integer kernels (no unsat answers)');
    return vm;
  }

  /** The flattened outputs onnxruntime computes on the file for one input (flattened, float32). */
  async judge(x: Float32Array): Promise<Float32Array> {
    const [y] = await runSession(this.session, [{ data: x, shape: this.inputShape }]);
    return y!.data;
  }

  /**
   * Bound graphs over input boxes, up to `maxSlots` boxes per call (undefined, with boundsUnavailable set,
   * when they cannot be made).
   */
  boxBounds(maxSlots: number): BoxBounds | undefined {
    const hit = this.boxBoundsBySlots.get(maxSlots);
    if (hit || this.boundsUnavailable) return hit;
    if (!this.engine) this.boundsUnavailable = this.engineUnavailable;
    else if (this.quantized) this.boundsUnavailable = 'int8 QDQ model';
    else {
      try {
        const bb = BoxBounds.build(this.engine.graph.prepared, maxSlots);
        this.boxBoundsBySlots.set(maxSlots, bb);
        return bb;
      } catch (e) {
        // (no bounds is always safe: the answer is then sat or unknown)
        this.boundsUnavailable = (e as Error).message.split('\n')[0]!;
      }
    }
    return undefined;
  }

  async dispose(): Promise<void> {
    for (const bb of this.boxBoundsBySlots.values()) bb.dispose();
    this.engine?.net.dispose();
    this.engine?.graph.dispose();
    await this.session.session.release();
  }
}

/**
 * Whether the engine's outputs on a batch of random inputs match onnxruntime's on the file, one input at a
 * time (a graph whose batch dimension was freed could mix examples): undefined when they do, else why not.
 */
async function engineDisagreement(net: Net, batch: number, exampleShape: number[], judge: (x: Float32Array) => Promise<Float32Array>): Promise<string | undefined> {
  const per = numel(exampleShape);
  const rng = makeRng('vnnlib-engine-check');
  const x = Float32Array.from({ length: batch * per }, () => 2 * rng() - 1);
  const z = net.frozen().logits(x, batch);
  const k = z.length / batch;
  for (let i = 0; i < Math.min(batch, 3); i++) {
    const y = await judge(x.slice(i * per, (i + 1) * per));
    if (y.length !== k) return `the engine computes ${k} outputs, onnxruntime ${y.length}`;
    for (let j = 0; j < k; j++) {
      if (!(Math.abs(z[i * k + j]! - y[j]!) <= 1e-4 * (1 + Math.abs(y[j]!)))) return `the engine's output ${j} is ${z[i * k + j]}, onnxruntime's ${y[j]}`;
    }
  }
  return undefined;
}
