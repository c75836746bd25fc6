// ONNX graph → trainable tfjs graph: preparation (support check, parameter discovery, constant folding)
// and execution.
import { densifySparse } from '../onnx/sparse.js';
import { tf, ensureBackend } from '../tfjs/tf.js';
import { cloneModel, declaredElemType, declaredShape, realInputs, topoOrder, type Dim, type OnnxModel } from '../onnx/model.js';
import { decodeTensor, dtypeFromCode, isFloat, overwriteTensorData, type DType, type HostTensor } from '../onnx/tensor.js';
import { OnnxError, UnsupportedOpsError } from '../util/errors.js';
import { checkOutputSize, sampleLimitFor } from '../onnx/limits.js';
import { parseNode, type Node } from '../ops/ir.js';
import { opSpec, unsupportedReason, type ParamRole } from '../ops/index.js';
import { hostToTf, isHost, OpCtx, tfToHost, type RunEnv, type Val } from '../ops/values.js';
import path from 'node:path';

export type { ParamRole };

export interface ParamInfo {
  name: string;
  shape: number[];
  dtype: DType;
  role: ParamRole;
  /** updated by gradient descent */
  trainable: boolean;
  /** a Conv/ConvTranspose/Gemm/MatMul weight: HYDRA and magnitude pruning act on these */
  prunable: boolean;
  /** the node that consumes it, e.g. "Conv node 'conv1'" */
  node: string;
  opType: string;
  /** fan-in of one output unit (prunable weights): Cin/g·kh·kw for conv, K for dense */
  fanIn?: number;
}

export interface GraphInput {
  name: string;
  dtype: DType;
  /** declared shape; a free dim is its dim_param name (or '?') */
  declared: Dim[];
  /** shape used: free batch dimension (axis 0) is 'N' */
  shape: Dim[];
}

export interface PrepareOptions {
  /** fixed shapes for inputs (by name) whose declared shape has free dimensions other than the batch */
  inputShapes?: Record<string, number[]>;
  /** report every folded/removed node (for inspect) */
  verbose?: boolean;
}

/** The ONNX model prepared for execution: nodes sorted, constants folded, parameters found. */
export class PreparedGraph {
  readonly nodes: Node[];
  /** nodes left to run after folding (topological order) */
  readonly runNodes: Node[];
  readonly consts = new Map<string, HostTensor>();
  readonly params = new Map<string, ParamInfo>();
  readonly paramInit = new Map<string, HostTensor>();
  readonly inputs: GraphInput[];
  readonly outputs: string[];
  /** shapes seen while tracing ('N' marks the free batch dimension) */
  readonly shapes = new Map<string, Dim[]>();
  readonly folded: Node[] = [];
  /** folded integer vectors with batch-size elements (free batch only), completed per batch size */
  readonly symConsts = new Map<string, SymConst>();
  /** A folded constant at a batch size: integer vectors that hold the batch size get it filled in. */
  constantAt(name: string, batch: number): HostTensor | undefined {
    const sym = this.symConsts.get(name);
    if (!sym) return this.consts.get(name);
    const data = sym.base.data.slice() as BigInt64Array;
    for (const i of sym.batchAt) data[i] = BigInt(batch);
    return { ...sym.base, data };
  }
  readonly batchFree: boolean;
  readonly sampleLimit: number;
  readonly opset: number;

  readonly model: OnnxModel;

  constructor(source: OnnxModel, opts: PrepareOptions = {}) {
    // sparse initializers (e.g. pruned weights) are read as dense tensors; exports write them dense
    const model = densifySparse(source);
    this.model = model;
    const g = model.proto.graph!;
    this.opset = model.opset;
    const baseDir = model.file ? path.dirname(model.file) : undefined;
    const initNames = (g.initializer ?? []).map((t) => t.name ?? '');
    const order = topoOrder(g.node ?? [], [...initNames, ...(g.input ?? []).map((i) => i.name ?? '')]);
    this.nodes = order.map((i) => parseNode(g.node![i]!, i, baseDir));

    // 1. every unsupported op, at once, before any work
    const bad = this.nodes
      .map((n) => ({ n, reason: unsupportedReason(n, model.opset) }))
      .filter((x) => x.reason)
      .map(({ n, reason }) => ({ opType: n.opType, domain: n.domain, node: n.name || `#${n.index}`, reason: reason === 'no converter for this op' ? undefined : reason }));
    if (bad.length) throw new UnsupportedOpsError(bad);

    // 2. initializers and parameters
    const inits = new Map<string, HostTensor>();
    for (const t of g.initializer ?? []) inits.set(t.name ?? '', decodeTensor(t, { baseDir, where: `initializer '${t.name}'` }));
    for (const [k, v] of findParams(this.nodes, inits)) this.params.set(k, v);
    for (const [name, t] of inits) {
      if (this.params.has(name)) this.paramInit.set(name, t);
      else this.consts.set(name, t);
    }

    // 3. inputs and their shapes
    const overrides = opts.inputShapes ?? {};
    let free = false;
    this.inputs = realInputs(g).map((vi) => {
      const name = vi.name ?? '';
      const code = declaredElemType(vi);
      const dtype = code ? dtypeFromCode(code, `graph input '${name}'`) : 'float32';
      const declared = declaredShape(vi);
      if (!declared && !overrides[name]) throw new OnnxError(`graph input '${name}' has no declared shape; give one`);
      let shape: Dim[] = (overrides[name] ?? declared!).slice();
      if (!overrides[name]) {
        shape = shape.map((d, i) => {
          if (typeof d === 'number') return d;
          if (i === 0) { free = true; return 'N'; }
          throw new OnnxError(`graph input '${name}' has a free dimension '${d}' at axis ${i}; give the input shape (e.g. --input-shape)`);
        });
      }
      checkOutputSize(shape.map((d) => (typeof d === 'number' ? d : 1)), `graph input '${name}'`);
      return { name, dtype, declared: declared ?? shape, shape };
    });
    this.batchFree = free;
    // what one example's activations may hold, relative to its inputs (a bound on what a file can make us compute)
    // (the free batch dimension is 'N', counted as 1)
    this.sampleLimit = sampleLimitFor(this.inputs.reduce((s, i) => s + i.shape.reduce<number>((p, d) => p * (typeof d === 'number' ? d : 1), 1), 0));
    this.outputs = (g.output ?? []).map((o) => o.name ?? '');

    // 4. constant folding by tracing: run the graph at two batch sizes; values that are constants, or
    //    host values identical at both sizes (shape chains not depending on the batch), are folded.
    const traceBatches = free ? [1, 2] : [1];
    const traces = traceBatches.map((b) => this.trace(b));
    // A value depends on data when it is computed from an input's or a parameter's values (Shape and Size
    // read only the shape). Values that do not, and are identical at both batch sizes, are constants.
    const dataDep = new Set<string>([...this.inputs.map((i) => i.name), ...this.params.keys()]);
    const runNodes: Node[] = [];
    for (const n of this.nodes) {
      const tainted = RANDOM_OPS.has(n.opType) || (n.opType !== 'Shape' && n.opType !== 'Size' && n.inputs.some((i) => dataDep.has(i)));
      const same = !tainted && n.outputs.every((o) => {
        if (!o) return true;
        const vs = traces.map((t) => t.get(o));
        if (vs.some((v) => v === undefined)) return false;
        const hs = vs.map((v) => (isHost(v!) ? v : tfToHost(v!)));
        return hs.every((h) => sameHost(h, hs[0]!));
      });
      const sym = !tainted && !same && free ? n.outputs.map((o) => symbolicBatch(traces.map((t) => t.get(o)), traceBatches)) : [];
      if (same) {
        for (const o of n.outputs) {
          if (!o) continue;
          const v = traces[0]!.get(o)!;
          this.consts.set(o, isHost(v) ? v : tfToHost(v));
        }
        this.folded.push(n);
      } else if (sym.length && sym.every((x) => x)) {
        // e.g. Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]) = [N, -1]: folded, N filled in at run time
        n.outputs.forEach((o, k) => this.symConsts.set(o, sym[k]!));
        this.folded.push(n);
      } else {
        if (tainted) for (const o of n.outputs) if (o) dataDep.add(o);
        runNodes.push(n);
      }
    }
    for (const t of traces) for (const v of t.values()) if (!isHost(v)) v.dispose();
    // 5. drop nodes no output depends on
    const live = new Set(this.outputs);
    const keep: Node[] = [];
    for (let i = runNodes.length - 1; i >= 0; i--) {
      const n = runNodes[i]!;
      if (n.outputs.some((o) => live.has(o))) {
        keep.push(n);
        for (const inp of n.inputs) if (inp) live.add(inp);
      }
    }
    this.runNodes = keep.reverse();
    for (const name of [...this.consts.keys()]) if (!live.has(name) && !initNames.includes(name)) this.consts.delete(name);
    for (const name of [...this.symConsts.keys()]) if (!live.has(name)) this.symConsts.delete(name);
  }

  /** Run every node once on zeros at the given batch size; returns every value computed. */
  private trace(batch: number): Map<string, Val> {
    ensureBackend();
    const values = new Map<string, Val>();
    const feeds: Record<string, Val> = {};
    for (const inp of this.inputs) {
      const shape = inp.shape.map((d) => (d === 'N' ? batch : (d as number)));
      feeds[inp.name] = isFloat(inp.dtype) ? tf.zeros(shape) : tf.zeros(shape, inp.dtype === 'bool' ? 'bool' : 'int32');
    }
    const params = new Map<string, tf.Tensor>();
    for (const [name, t] of this.paramInit) params.set(name, hostToTf(t));
    const env: RunEnv = { opset: this.opset, training: false, constTensor: () => undefined, updates: new Map(), sampleLimit: this.sampleLimit };
    const lookup = (name: string): Val | undefined => values.get(name) ?? this.consts.get(name) ?? params.get(name) ?? feeds[name];
    // Inputs that may steer shapes (integers, scalars and vectors: indices, shapes, bounds given at run time)
    // are zeros here, which may not make sense to the nodes reading them. Those nodes are data-dependent,
    // never folded, so their failure here only ends the trace along that path.
    const intDep = new Set(this.inputs.filter((i) => !isFloat(i.dtype) || i.shape.length <= 1).map((i) => i.name));
    for (const n of this.nodes) {
      const ins = n.inputs.map((i) => (i ? lookup(i) : undefined));
      const dependsOnInt = n.inputs.some((i) => intDep.has(i));
      if (dependsOnInt) {
        for (const o of n.outputs) intDep.add(o);
        if (n.inputs.some((i, k) => i && ins[k] === undefined)) continue;
        try {
          const outs = runNode(n, ins, env);
          n.outputs.forEach((o, k) => o && outs[k] !== undefined && values.set(o, outs[k]!));
        } catch {
          /* not traceable without the real values */
        }
        continue;
      }
      const outs = runNode(n, ins, env);
      n.outputs.forEach((o, k) => o && outs[k] !== undefined && values.set(o, outs[k]!));
    }
    for (const [name, v] of values) {
      const prev = this.shapes.get(name);
      const s = v.shape;
      this.shapes.set(name, prev ? s.map((d, i) => (prev[i] === d ? d : 'N')) : s.slice());
    }
    for (const f of Object.values(feeds)) if (!isHost(f)) f.dispose();
    for (const p of params.values()) p.dispose();
    return values;
  }
}


/** Which initializers are weights, biases, normalization parameters or statistics (by the layers using them). */
export function findParams(nodes: Node[], inits: Map<string, HostTensor>): Map<string, ParamInfo> {
  const params = new Map<string, ParamInfo>();
  const producer = new Map<string, Node>();
  for (const n of nodes) for (const o of n.outputs) producer.set(o, n);
  const source = (name: string): string | undefined => {
    for (let hops = 0; hops < 8; hops++) {
      if (inits.has(name)) return name;
      const p = producer.get(name);
      if (!p || !opSpec(p.opType)?.paramPassThrough) return undefined;
      name = p.inputs[0]!;
    }
    return undefined;
  };
  const add = (init: string, role: ParamRole, prunable: boolean, n: Node): void => {
    const t = inits.get(init)!;
    if (!isFloat(t.dtype) || params.has(init)) return;
    const trainable = role !== 'running_mean' && role !== 'running_var';
    const fanIn = prunable ? opSpec(n.opType)?.params?.fanIn?.(t.shape, n) : undefined;
    params.set(init, { name: init, shape: t.shape, dtype: t.dtype, role, trainable, prunable, node: n.label, opType: n.opType, fanIn });
  };
  const consumers = new Map<string, Node[]>();
  for (const n of nodes) for (const i of n.inputs) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  for (const n of nodes) {
    const slots = opSpec(n.opType)?.params;
    for (const [slot, role, prunable] of slots?.slots ?? []) {
      const src = n.inputs[slot] ? source(n.inputs[slot]!) : undefined;
      if (src) add(src, role, prunable, n);
    }
    if (slots?.constantOperand) {
      // x·W (+ b): the constant operand is the weight, a constant added to the product is its bias
      for (const slot of [1, 0]) {
        const src = source(n.inputs[slot]!);
        if (src && inits.get(src)!.shape.length >= 2) { add(src, 'weight', true, n); break; }
      }
      for (const c of consumers.get(n.outputs[0]!) ?? []) {
        if (c.opType !== 'Add') continue;
        const other = c.inputs[0] === n.outputs[0] ? c.inputs[1] : c.inputs[0];
        const src = other ? source(other) : undefined;
        if (src) add(src, 'bias', false, n);
      }
    }
  }
  return params;
}

/** An int64 vector constant except at `batchAt`, where it equals the batch size. */
export interface SymConst {
  base: HostTensor;
  batchAt: number[];
}

/** A traced integer value that equals the batch size at some positions and is constant elsewhere. */
function symbolicBatch(vals: (Val | undefined)[], batches: number[]): SymConst | undefined {
  if (vals.some((v) => !v || !isHost(v))) return undefined;
  const hs = vals as HostTensor[];
  const base = hs[0]!;
  if (base.dtype !== 'int64' && base.dtype !== 'int32') return undefined;
  if (hs.some((h) => h.shape.join() !== base.shape.join())) return undefined;
  const batchAt: number[] = [];
  for (let i = 0; i < base.data.length; i++) {
    const col = hs.map((h) => Number(h.data[i]));
    if (col.every((v) => v === col[0])) continue;
    if (col.every((v, k) => v === batches[k])) batchAt.push(i);
    else return undefined;
  }
  return batchAt.length ? { base, batchAt } : undefined;
}

function fillBatch(s: SymConst, batch: number): HostTensor {
  const data = s.base.data.slice() as BigInt64Array | Int32Array;
  for (const i of s.batchAt) data[i] = (data instanceof BigInt64Array ? BigInt(batch) : batch) as never;
  return { dtype: s.base.dtype, shape: s.base.shape, data };
}

/** Ops whose output differs from run to run: never folded. */
const RANDOM_OPS = new Set(['Dropout', 'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Bernoulli', 'Multinomial']);

function sameHost(a: HostTensor, b: HostTensor): boolean {
  if (a.dtype !== b.dtype || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return false;
  for (let i = 0; i < a.data.length; i++) if (a.data[i] !== b.data[i] && !(Number.isNaN(a.data[i]) && Number.isNaN(b.data[i]))) return false;
  return true;
}

/** Run one node, turning any failure into an error that names it. */
export function runNode(n: Node, inputs: (Val | undefined)[], env: RunEnv): Val[] {
  const op = opSpec(n.opType, n.domain)?.forward;
  if (!op) throw new OnnxError(`${n.label}: unsupported op`);
  try {
    return op.run(new OpCtx(n, inputs, env));
  } catch (e) {
    if (e instanceof OnnxError) throw e;
    throw new OnnxError(`${n.label}: ${(e as Error).message.split('\n')[0]}`);
  }
}

export interface ForwardOptions {
  /** BatchNormalization uses batch statistics (and reports running-statistics updates), Dropout is active */
  training?: boolean;
}

export interface ForwardResult {
  outputs: tf.Tensor[];
  /** new running statistics, by initializer name (training mode only) */
  updates: Map<string, tf.Tensor>;
}

/** A trainable tfjs graph computing the same function as the ONNX model. Weights are tf.Variables keyed by initializer name. */
export class TfGraph {
  readonly variables = new Map<string, tf.Variable>();
  private readonly constTensors = new Map<HostTensor, tf.Tensor>();

  constructor(readonly prepared: PreparedGraph) {
    ensureBackend();
    for (const [name, info] of prepared.params) {
      const init = prepared.paramInit.get(name)!;
      this.variables.set(name, tf.variable(hostToTf(init), info.trainable));
    }
  }

  static fromModel(model: OnnxModel, opts: PrepareOptions = {}): TfGraph {
    return new TfGraph(new PreparedGraph(model, opts));
  }

  get params(): Map<string, ParamInfo> {
    return this.prepared.params;
  }
  get inputs(): GraphInput[] {
    return this.prepared.inputs;
  }
  get outputs(): string[] {
    return this.prepared.outputs;
  }
  trainableNames(): string[] {
    return [...this.prepared.params.values()].filter((p) => p.trainable).map((p) => p.name);
  }
  prunableNames(): string[] {
    return [...this.prepared.params.values()].filter((p) => p.prunable).map((p) => p.name);
  }

  private constTensor = (h: HostTensor): tf.Tensor | undefined => {
    let t = this.constTensors.get(h);
    if (!t) {
      t = tf.keep(hostToTf(h));
      this.constTensors.set(h, t);
    }
    return t;
  };

  /**
   * Run the graph. `inputs`: one tensor per graph input (in order) or a record by name. Values for a
   * parameter may be overridden in `overrides` (e.g. masked weights w⊙m for pruning), keeping gradients.
   */
  forward(inputs: tf.Tensor | Val[] | Record<string, Val>, opts: ForwardOptions = {}, overrides?: Map<string, tf.Tensor>): ForwardResult {
    const feeds = new Map<string, Val>();
    if (inputs instanceof tf.Tensor) feeds.set(this.inputs[0]!.name, inputs);
    else if (Array.isArray(inputs)) inputs.forEach((v, i) => feeds.set(this.inputs[i]!.name, v));
    else for (const [k, v] of Object.entries(inputs)) feeds.set(k, v);
    for (const inp of this.inputs) {
      const v = feeds.get(inp.name);
      if (!v) throw new OnnxError(`no value given for graph input '${inp.name}'`);
      const s = v.shape;
      const want = inp.shape;
      if (s.length !== want.length || want.some((d, i) => typeof d === 'number' && d !== s[i])) {
        throw new OnnxError(`graph input '${inp.name}' expects shape [${want.join(',')}], got [${s.join(',')}]`);
      }
    }
    const env: RunEnv = { opset: this.prepared.opset, training: !!opts.training, constTensor: this.constTensor, updates: new Map(), sampleLimit: this.prepared.sampleLimit };
    const values = new Map<string, Val>();
    const batch = this.inputs[0] ? feeds.get(this.inputs[0].name)!.shape[0] ?? 1 : 1;
    const sym = (name: string): Val | undefined => {
      const s = this.prepared.symConsts.get(name);
      return s && fillBatch(s, batch);
    };
    const lookup = (name: string): Val | undefined =>
      values.get(name) ?? overrides?.get(name) ?? this.variables.get(name) ?? this.prepared.consts.get(name) ?? sym(name) ?? feeds.get(name);
    for (const n of this.prepared.runNodes) {
      const outs = runNode(n, n.inputs.map((i) => (i ? lookup(i) : undefined)), env);
      n.outputs.forEach((o, k) => o && outs[k] !== undefined && values.set(o, outs[k]!));
    }
    const outputs = this.outputs.map((o) => {
      const v = lookup(o);
      if (!v) throw new OnnxError(`graph output '${o}' was not computed`);
      return isHost(v) ? hostToTf(v) : v;
    });
    return { outputs, updates: env.updates };
  }

  /** First output (the logits of a classifier), inference mode. */
  predict(x: tf.Tensor): tf.Tensor {
    return this.forward(x).outputs[0]!;
  }

  /** Assign running-statistics updates returned by a training-mode forward pass. */
  applyUpdates(updates: Map<string, tf.Tensor>): void {
    for (const [name, t] of updates) this.variables.get(name)?.assign(t);
  }

  /** Current values of all parameters, by initializer name. */
  snapshot(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const [name, v] of this.variables) out.set(name, v.dataSync() as Float32Array);
    return out;
  }

  /** The original model with current parameter values written into its initializers (same nodes and names). */
  exportModel(values: Map<string, Float32Array> = this.snapshot()): OnnxModel {
    const out = cloneModel(this.prepared.model);
    const byName = new Map((out.proto.graph!.initializer ?? []).map((t) => [t.name ?? '', t]));
    for (const [name, vals] of values) {
      const t = byName.get(name);
      if (!t) throw new OnnxError(`parameter '${name}' is not an initializer of the model`);
      overwriteTensorData(t, vals);
    }
    return out;
  }

  dispose(): void {
    for (const v of this.variables.values()) v.dispose();
    for (const t of this.constTensors.values()) t.dispose();
    this.variables.clear();
    this.constTensors.clear();
  }
}
