// The compiled engine. A prepared graph becomes onnxruntime models per batch size and mode:
//  * a forward model (weights as inputs) that also returns what the backward pass needs, and a backward
//    model made by reverse-mode differentiation over ONNX nodes. Both run synchronously inside one
//    tf.customGrad op, so losses and optimizers written in tfjs train the network at onnxruntime speed;
//  * for fixed weights (attacks, the inner loop of adversarial training), one fused model computing the
//    logits and the input gradient of cross-entropy or KL loss, weights baked in so onnxruntime can
//    pre-pack them.
import seedrandom from 'seedrandom';
import { tf } from '../tf.js';
import type { PreparedGraph } from '../../graph/graph.js';
import { Attrs, parseNode, type Node } from '../../graph/ir.js';
import { numberAt, hostTensor, type HostTensor } from '../../onnx/tensor.js';
import { onnx } from '../../onnx/proto.js';
import { GraphBuilder } from './builder.js';
import { gradRule, type GradCtx } from './grad-rules.js';
import { COMPILED_OPSET, emitNormalized, shapeLookup } from './normalize.js';
import { NotCompilableError } from './errors.js';
import { SyncSession, type OrtOut } from '../ort-sync.js';

export { NotCompilableError };

interface BnStat { mean: string; var: string; runMean: string; runVar: string; momentum: number }
interface DropMask { name: string; ratio: number; shape: number[] }

interface Forward {
  fb: GraphBuilder;
  xName: string;
  xShape: number[];
  /** parameters fed as inputs (empty when baked) */
  paramInputs: string[];
  bnStats: BnStat[];
  dropMasks: DropMask[];
  logits: string;
  /** initializers of the forward graph (constants, and baked parameters) */
  consts: Map<string, HostTensor>;
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** Forward graph at opset 17. `bake`: parameter values to embed as initializers (else they are inputs). */
function emitForward(p: PreparedGraph, batch: number, training: boolean, withIndices: boolean, bake?: Map<string, Float32Array>): Forward {
  if (p.inputs.length !== 1) throw new NotCompilableError('more than one graph input');
  const inp = p.inputs[0]!;
  const fb = new GraphBuilder(COMPILED_OPSET, 'fwd');
  const shapeOf = shapeLookup(p, batch);
  const xShape = shapeOf(inp.name);
  fb.input(inp.name, 'float32', xShape);
  const used = new Set<string>();
  for (const n of p.runNodes) for (const i of n.inputs) if (i) used.add(i);
  const consts = new Map<string, HostTensor>();
  const paramInputs: string[] = [];
  for (const name of [...p.params.keys()].filter((n) => used.has(n))) {
    const info = p.params.get(name)!;
    const v = bake?.get(name);
    if (v) {
      const t = hostTensor('float32', info.shape, v);
      consts.set(name, t);
      fb.init(name, t);
    } else {
      fb.input(name, 'float32', info.shape);
      paramInputs.push(name);
    }
  }
  for (const name of used) {
    let c = p.consts.get(name);
    const s = p.symConsts.get(name);
    if (s) {
      const data = s.base.data.slice() as BigInt64Array;
      for (const i of s.batchAt) data[i] = BigInt(batch);
      c = { ...s.base, data };
    }
    if (c) {
      consts.set(name, c);
      fb.init(name, c);
    }
  }
  const bnStats: BnStat[] = [];
  const dropMasks: DropMask[] = [];
  for (const n of p.runNodes) {
    const a = new Attrs(n);
    if (n.opType === 'BatchNormalization' && training) {
      // training form lowered to primitive ops, which then differentiate like any other subgraph
      const rank = shapeOf(n.inputs[0]!).length;
      const axes = [0, ...range(2, rank)];
      const cs = [-1, ...new Array(rank - 2).fill(1)];
      const x = n.inputs[0]!;
      const mean = fb.reduce('ReduceMean', x, axes, true);
      const xc = fb.op('Sub', [x, mean]);
      const v = fb.reduce('ReduceMean', fb.op('Mul', [xc, xc]), axes, true);
      const inv = fb.op('Reciprocal', [fb.op('Sqrt', [fb.op('Add', [v, fb.scalarF(a.float('epsilon', 1e-5))])])]);
      const scaled = fb.op('Mul', [fb.op('Mul', [xc, inv]), fb.reshape(n.inputs[1]!, cs)]);
      fb.add('Add', [scaled, fb.reshape(n.inputs[2]!, cs)], {}, [n.outputs[0]!]);
      bnStats.push({ mean, var: v, runMean: n.inputs[3]!, runVar: n.inputs[4]!, momentum: a.float('momentum', 0.9) });
      continue;
    }
    if (n.opType === 'Dropout') {
      let ratio = p.opset >= 12 ? 0.5 : a.float('ratio', 0.5);
      if (p.opset >= 12 && n.inputs[1]) {
        const r = p.consts.get(n.inputs[1]);
        if (!r) throw new NotCompilableError('Dropout ratio computed at run time');
        ratio = numberAt(r, 0);
      }
      if (training && ratio > 0) {
        // masks are drawn in JS (seeded) and fed: y = x · mask/(1 − ratio)
        const shape = shapeOf(n.inputs[0]!);
        const name = `dropout_mask/${n.outputs[0]}`;
        fb.input(name, 'float32', shape);
        dropMasks.push({ name, ratio, shape });
        fb.add('Mul', [n.inputs[0]!, name], {}, [n.outputs[0]!]);
      } else fb.add('Identity', [n.inputs[0]!], {}, [n.outputs[0]!]);
      continue;
    }
    if (n.opType === 'MaxPool' && withIndices && !n.outputs[1]) {
      const withIdx = parseNode({ ...n.proto, output: [n.outputs[0]!, `${n.outputs[0]}/argmax`] }, n.index);
      emitNormalized(fb, withIdx, p.opset, consts, shapeOf);
      continue;
    }
    emitNormalized(fb, n, p.opset, consts, shapeOf);
  }
  return { fb, xName: inp.name, xShape, paramInputs, bnStats, dropMasks, logits: p.outputs[0]!, consts };
}

function stripOutputTypes(bytes: Uint8Array): Uint8Array {
  const m = onnx.ModelProto.decode(bytes);
  for (const o of m.graph!.output ?? []) o.type = null;
  return onnx.ModelProto.encode(m).finish();
}

/** A model from a builder, its outputs listed without types (onnxruntime infers them). */
function modelBytes(b: GraphBuilder, outputs: string[]): Uint8Array {
  b.outputs.length = 0;
  for (const o of new Set(outputs)) b.outputs.push({ name: o, dtype: 'float32', shape: [] });
  return stripOutputTypes(b.toModel());
}

function cloneBuilder(src: GraphBuilder, prefix: string): GraphBuilder {
  const b = new GraphBuilder(src.opset, prefix);
  for (const i of src.inputs) b.input(i.name, i.dtype, i.shape);
  b.initializers.push(...src.initializers);
  for (const n of src.nodes) b.copy(n);
  return b;
}

/** Shapes of every value of the forward model, read off one onnxruntime run on zeros. */
function probeShapes(f: Forward, threads: number | undefined): Map<string, number[]> {
  const names: string[] = [];
  for (const n of f.fb.nodes) for (const o of n.output ?? []) if (o) names.push(o);
  const s = new SyncSession(modelBytes(cloneBuilder(f.fb, 'probe'), names), { threads, optimization: 'disabled' });
  const feeds: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (const i of f.fb.inputs) feeds[i.name] = { data: new Float32Array(numel(i.shape as number[])), shape: i.shape as number[] };
  const r = s.run(feeds, names);
  s.dispose();
  const shapes = new Map<string, number[]>();
  names.forEach((n, k) => shapes.set(n, r[k]!.shape));
  for (const i of f.fb.inputs) shapes.set(i.name, i.shape as number[]);
  for (const [n, c] of f.consts) shapes.set(n, c.shape);
  return shapes;
}

interface DiffEnv {
  bb: GraphBuilder;
  /** how the backward graph refers to a forward value */
  fwdValue(v: string): string;
  /** gradient of the logits in the backward graph */
  dlogits: string;
}

/** Reverse-mode differentiation of the forward graph w.r.t. `wrt`; returns the gradients' names in env.bb. */
function differentiate(f: Forward, shapes: Map<string, number[]>, wrt: string[], env: DiffEnv): string[] {
  const nodes: Node[] = f.fb.nodes.map((n, i) => parseNode(n, i));
  const bb = env.bb;
  const req = new Set(wrt);
  for (const n of nodes) {
    if (n.opType === 'Shape' || n.opType === 'Size') continue;
    if (n.inputs.some((i) => req.has(i))) for (const o of n.outputs) if (o) req.add(o);
  }
  const contrib = new Map<string, string[]>([[f.logits, [env.dlogits]]]);
  const summed = new Map<string, string>();
  const gradOf = (v: string): string | undefined => {
    const s = summed.get(v);
    if (s) return s;
    const parts = contrib.get(v);
    if (!parts || !parts.length) return undefined;
    const out = parts.length === 1 ? parts[0]! : bb.op('Sum', parts);
    summed.set(v, out);
    return out;
  };
  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k]!;
    if (!n.outputs.some((o) => contrib.has(o))) continue;
    if (!n.inputs.some((i) => req.has(i))) continue;
    const rule = gradRule(n.opType);
    if (!rule) throw new NotCompilableError(`no gradient rule for ${n.opType} (${n.label})`);
    const ctx: GradCtx = {
      b: bb, node: n, a: new Attrs(n), opset: COMPILED_OPSET,
      x: (i) => env.fwdValue(n.inputs[i]!),
      y: (i) => env.fwdValue(n.outputs[i]!),
      dy: (i) => (n.outputs[i] ? gradOf(n.outputs[i]!) : undefined),
      inShape: (i) => shapes.get(n.inputs[i]!)!,
      outShape: (i) => shapes.get(n.outputs[i]!)!,
      need: (i) => !!n.inputs[i] && req.has(n.inputs[i]!),
      ints: (i) => {
        const c = f.consts.get(n.inputs[i]!);
        if (!c) throw new NotCompilableError(`${n.label}: input ${i} is computed at run time`);
        return Array.from({ length: c.data.length }, (_, j) => numberAt(c, j));
      },
      has: (i) => !!n.inputs[i],
    };
    let grads: (string | undefined)[];
    try {
      grads = rule(ctx);
    } catch (e) {
      if (e instanceof NotCompilableError) throw e;
      throw new NotCompilableError(`${n.label}: ${(e as Error).message}`);
    }
    grads.forEach((g, i) => {
      const v = n.inputs[i];
      if (!g || !v || !req.has(v)) return;
      contrib.set(v, [...(contrib.get(v) ?? []), g]);
    });
  }
  return wrt.map((w) => {
    const g = gradOf(w) ?? bb.op('ConstantOfShape', [bb.constI64(shapes.get(w)!)]); // no path to the logits
    const out = `grad/${w}`;
    bb.add('Identity', [g], {}, [out]);
    return out;
  });
}

interface Trainable {
  /** parameter tensors (dataIds) whose values are baked into the sessions, if baked */
  bakedIds?: unknown[];
  f: Forward;
  forward: SyncSession;
  forwardOutputs: string[];
  backward?: SyncSession;
  dyName: string;
  saved: string[];
  fromInputs: string[];
  gradOutputs: string[];
  gradX: boolean;
  gradParams: string[];
}

export interface CompiledRunOptions {
  training: boolean;
  /** gradient with respect to the input is needed */
  gradX: boolean;
  /** gradients with respect to the trainable parameters are needed */
  gradParams: boolean;
  /** seed of the Dropout masks (training) */
  seed?: number;
  /**
   * Embed the current weights in the sessions (rebuilt whenever other weight tensors are passed): onnxruntime
   * then pre-packs them, which makes convolutions 2-4x faster; worth it when several passes share weights
   * or the network is conv-heavy. Default: true.
   */
  bake?: boolean;
}

type Feed = { data: Float32Array | BigInt64Array | Int32Array | Uint8Array; shape: readonly number[] };

export type AttackLoss = { kind: 'ce'; labels: Int32Array } | { kind: 'kl'; target: Float32Array };

/** Fixed weights: logits and loss gradients with respect to the input, one onnxruntime call each. */
export class FrozenNet {
  private readonly sessions = new Map<string, { s: SyncSession; xName: string; xShape: number[]; outs: string[] }>();
  constructor(private readonly net: CompiledNet, private readonly values: Map<string, Float32Array>) {}

  private session(batch: number, kind: 'logits' | 'ce' | 'kl') {
    const key = `${batch}|${kind}`;
    let s = this.sessions.get(key);
    if (s) return s;
    const p = this.net.p;
    const f = emitForward(p, batch, false, kind !== 'logits', this.values);
    if (kind === 'logits') {
      s = { s: new SyncSession(modelBytes(f.fb, [f.logits]), { threads: this.net.threads }), xName: f.xName, xShape: f.xShape, outs: [f.logits] };
    } else {
      const shapes = probeShapes(f, this.net.threads);
      const b = cloneBuilder(f.fb, 'attack');
      const classes = shapes.get(f.logits)!.at(-1)!;
      let target: string;
      if (kind === 'ce') {
        b.input('labels', 'int64', [batch]);
        target = b.op('OneHot', ['labels', b.constI64([classes], []), b.constF([0, 1])], { axis: -1 });
      } else target = b.input('target', 'float32', [batch, classes]);
      // d/dz of Σ CE(z, y) or Σ KL(target ‖ softmax(z)) is softmax(z) − target
      const dz = b.op('Sub', [b.op('Softmax', [f.logits], { axis: -1 }), target]);
      const [gx] = differentiate(f, shapes, [f.xName], { bb: b, fwdValue: (v) => v, dlogits: dz });
      s = { s: new SyncSession(modelBytes(b, [gx!, f.logits]), { threads: this.net.threads }), xName: f.xName, xShape: f.xShape, outs: [gx!, f.logits] };
    }
    this.sessions.set(key, s);
    return s;
  }

  logits(x: Float32Array, batch: number): Float32Array {
    const s = this.session(batch, 'logits');
    return s.s.run({ [s.xName]: { data: x, shape: s.xShape } }, s.outs)[0]!.data as Float32Array;
  }

  /** Gradient of the summed loss with respect to x, and the logits at x. */
  lossGrad(x: Float32Array, batch: number, loss: AttackLoss): { grad: Float32Array; logits: Float32Array } {
    const s = this.session(batch, loss.kind);
    const feeds: Record<string, Feed> = { [s.xName]: { data: x, shape: s.xShape } };
    if (loss.kind === 'ce') feeds.labels = { data: BigInt64Array.from(loss.labels, (v) => BigInt(v)), shape: [batch] };
    else feeds.target = { data: loss.target, shape: [batch, loss.target.length / batch] };
    const [g, z] = s.s.run(feeds, s.outs);
    return { grad: g!.data as Float32Array, logits: z!.data as Float32Array };
  }

  dispose(): void {
    for (const s of this.sessions.values()) s.s.dispose();
    this.sessions.clear();
  }
}

/** A prepared graph compiled for onnxruntime (configurations compiled lazily and cached). */
export class CompiledNet {
  private readonly cache = new Map<string, Trainable>();
  private readonly shapeCache = new Map<string, Map<string, number[]>>();
  private frozenNet?: { ids: unknown[]; net: FrozenNet };
  private step = 0;

  constructor(readonly p: PreparedGraph, readonly threads?: number) {}

  private trainable(batch: number, o: CompiledRunOptions, params?: Map<string, tf.Tensor>): Trainable {
    const bake = o.bake !== false && params !== undefined;
    const key = `${batch}|${o.training}|${o.gradX}|${o.gradParams}|${bake}`;
    const hit = this.cache.get(key);
    const ids = bake ? [...this.p.params.keys()].map((n) => (params!.get(n) as unknown as { dataId: unknown } | undefined)?.dataId) : undefined;
    if (hit && (!bake || hit.bakedIds!.every((id, i) => id === ids![i]))) return hit;
    if (hit) {
      hit.forward.dispose();
      hit.backward?.dispose();
    }
    // baked: every parameter is an initializer (gradients with respect to initializers work the same)
    const needGrad = o.gradX || o.gradParams;
    let bakeValues: Map<string, Float32Array> | undefined;
    if (bake) {
      bakeValues = new Map();
      for (const n of this.p.params.keys()) {
        const t = params!.get(n);
        if (t) bakeValues.set(n, t.dataSync() as Float32Array);
      }
    }
    const f = emitForward(this.p, batch, o.training, needGrad, bakeValues);
    const outputs = [f.logits, ...f.bnStats.flatMap((s) => [s.mean, s.var])];
    const usedParams = [...this.p.params.keys()].filter((n) => f.paramInputs.includes(n) || (bakeValues?.has(n) && f.consts.has(n)));
    const gradParams = o.gradParams ? usedParams.filter((n) => this.p.params.get(n)!.trainable) : [];
    const t: Trainable = { bakedIds: ids, f, forward: undefined as unknown as SyncSession, forwardOutputs: [], dyName: 'grad/logits', saved: [], fromInputs: [], gradOutputs: [], gradX: o.gradX, gradParams };
    if (needGrad) {
      let shapes = this.shapeCache.get(key);
      if (!shapes) {
        shapes = probeShapes(f, this.threads);
        this.shapeCache.set(key, shapes);
      }
      const bb = new GraphBuilder(COMPILED_OPSET, 'bwd');
      bb.input(t.dyName, 'float32', shapes.get(f.logits)!);
      const inputLike = new Set([f.xName, ...f.paramInputs, ...f.dropMasks.map((d) => d.name)]);
      const seen = new Set<string>();
      const fwdValue = (v: string): string => {
        if (seen.has(v)) return v;
        seen.add(v);
        const c = f.consts.get(v);
        if (c) bb.init(v, c);
        else if (inputLike.has(v)) {
          bb.input(v, 'float32', shapes.get(v)!);
          t.fromInputs.push(v);
        } else {
          bb.input(v, v.endsWith('/argmax') ? 'int64' : 'float32', shapes.get(v)!);
          t.saved.push(v);
        }
        return v;
      };
      t.gradOutputs = differentiate(f, shapes, [...(o.gradX ? [f.xName] : []), ...gradParams], { bb, fwdValue, dlogits: t.dyName });
      outputs.push(...t.saved);
      t.backward = new SyncSession(modelBytes(bb, t.gradOutputs), { threads: this.threads });
    }
    t.forwardOutputs = [...new Set(outputs)];
    t.forward = new SyncSession(modelBytes(f.fb, t.forwardOutputs), { threads: this.threads });
    this.cache.set(key, t);
    return t;
  }

  /** Compile a configuration now (throws NotCompilableError when some op cannot be differentiated). */
  prepare(batch: number, o: CompiledRunOptions, params: Map<string, tf.Tensor>): void {
    this.trainable(batch, o, params);
  }

  /**
   * Logits of x with the given parameter values (tf tensors: variables, or masked weights); the result
   * carries gradients to x and to the trainable parameters, as requested in `o`. Returns the
   * running-statistics updates of training mode.
   */
  run(x: tf.Tensor, params: Map<string, tf.Tensor>, o: CompiledRunOptions): { logits: tf.Tensor; updates: Map<string, tf.Tensor> } {
    const t = this.trainable(x.shape[0]!, o, params);
    const f = t.f;
    const pTensors = f.paramInputs.map((n) => {
      const v = params.get(n);
      if (!v) throw new Error(`no value for parameter '${n}'`);
      return v;
    });
    const masks = f.dropMasks.map((d) => {
      const rng = seedrandom(`${o.seed ?? this.step++}:${d.name}`);
      const m = new Float32Array(numel(d.shape));
      const keep = 1 / (1 - d.ratio);
      for (let i = 0; i < m.length; i++) m[i] = rng() >= d.ratio ? keep : 0;
      return m;
    });
    // only the tensors whose gradients are wanted enter the custom op; the others are read directly
    const diffInputs: tf.Tensor[] = [...(t.gradX ? [x] : []), ...t.gradParams.map((n) => params.get(n)!)];
    let stats: OrtOut[] = [];
    const compute = (): { value: tf.Tensor; byName: Map<string, OrtOut>; feeds: Record<string, Feed> } => {
      const feeds: Record<string, Feed> = { [f.xName]: { data: x.dataSync() as Float32Array, shape: x.shape } };
      f.paramInputs.forEach((n, i) => (feeds[n] = { data: pTensors[i]!.dataSync() as Float32Array, shape: pTensors[i]!.shape }));
      f.dropMasks.forEach((d, i) => (feeds[d.name] = { data: masks[i]!, shape: d.shape }));
      const outs = t.forward.run(feeds, t.forwardOutputs);
      const byName = new Map(t.forwardOutputs.map((n, i) => [n, outs[i]!]));
      const lo = byName.get(f.logits)!;
      stats = f.bnStats.flatMap((s) => [byName.get(s.mean)!, byName.get(s.var)!]);
      return { value: tf.tensor(lo.data as Float32Array, lo.shape), byName, feeds };
    };
    let logits: tf.Tensor;
    if (!diffInputs.length) logits = compute().value;
    else {
      const op = tf.customGrad((...args: unknown[]) => {
        void args;
        const { value, byName, feeds } = compute();
        const gradFunc = (dy: tf.Tensor): tf.Tensor[] => {
          const bf: Record<string, Feed> = { [t.dyName]: { data: dy.dataSync() as Float32Array, shape: dy.shape } };
          for (const s of t.saved) { const v = byName.get(s)!; bf[s] = { data: v.data, shape: v.shape }; }
          for (const s of t.fromInputs) bf[s] = feeds[s]!;
          const gs = t.backward!.run(bf, t.gradOutputs);
          return diffInputs.map((d, i) => tf.tensor(gs[i]!.data as Float32Array, d.shape));
        };
        return { value, gradFunc };
      });
      logits = op(...diffInputs) as tf.Tensor;
    }
    const updates = new Map<string, tf.Tensor>();
    f.bnStats.forEach((s, i) => {
      const rm = params.get(s.runMean)!;
      const rv = params.get(s.runVar)!;
      updates.set(s.runMean, tf.add(tf.mul(rm, s.momentum), tf.mul(tf.tensor(stats[2 * i]!.data as Float32Array, rm.shape), 1 - s.momentum)));
      updates.set(s.runVar, tf.add(tf.mul(rv, s.momentum), tf.mul(tf.tensor(stats[2 * i + 1]!.data as Float32Array, rv.shape), 1 - s.momentum)));
    });
    return { logits, updates };
  }

  /**
   * The network with the given weights frozen (baked into fused attack models). Cached while the same
   * tensors are passed, so the inner loop of adversarial training compiles once per weight update.
   */
  frozen(params: Map<string, tf.Tensor>): FrozenNet {
    const names = [...this.p.params.keys()];
    const ids = names.map((n) => (params.get(n) as unknown as { dataId: unknown } | undefined)?.dataId);
    if (this.frozenNet && this.frozenNet.ids.every((id, i) => id === ids[i])) return this.frozenNet.net;
    this.frozenNet?.net.dispose();
    const values = new Map<string, Float32Array>();
    for (const n of names) {
      const t = params.get(n);
      if (t) values.set(n, t.dataSync() as Float32Array);
    }
    const net = new FrozenNet(this, values);
    this.frozenNet = { ids, net };
    return net;
  }

  dispose(): void {
    for (const c of this.cache.values()) {
      c.forward.dispose();
      c.backward?.dispose();
    }
    this.cache.clear();
    this.frozenNet?.net.dispose();
    this.frozenNet = undefined;
  }
}
