// Channel pruning made physical: a new ONNX model with the removed channels of each group taken out of
// every tensor that holds them (producer rows and biases, BatchNorm parameters, consumers' input slices,
// per-channel constants), depthwise `group` attributes and literal Reshape targets adjusted, value_info
// shapes updated. It reproduces the *masked network*: the same model with the removed channels'
// producer rows and biases and their BatchNorm scale and shift set to zero (`maskChannels`), where a
// removed channel is exactly 0 after BatchNorm, so removing it changes nothing. A removed channel that
// still carries a nonzero constant (a BatchNorm shift left in place, Sigmoid(0) = 0.5, a per-channel
// constant added by a join) is folded into the bias of the layer reading it when that is exact (Gemm,
// MatMul, Conv without padding); otherwise shrinking stops with an error naming the layer.
import path from 'node:path';
import { cloneModel, type OnnxModel } from '../onnx/model.js';
import type { AttributeProto, NodeProto } from '../onnx/proto.js';
import { onnx } from '../onnx/proto.js';
import { allocate, decodeTensor, encodeTensor, numberAt, type DType, type HostTensor } from '../onnx/tensor.js';
import { densifySparse } from '../onnx/sparse.js';
import { PreparedGraph, type PrepareOptions } from '../graph/graph.js';
import { OnnxError, UserError } from '../util/errors.js';
import { channelNorms, constantPerPosition, largestChannels, type ChannelAnalysis, type ChannelGroup, type ChannelProducer, type ChannelValues, type SliceRole } from './channels.js';

/** Per group (in `analysis.groups` order) the channel indices kept; undefined keeps them all. */
export type KeptChannels = readonly (readonly number[] | undefined)[];

/** What the masked network sets to zero for a removed channel. */
const MASKED_ROLES: ReadonlySet<SliceRole> = new Set<SliceRole>(['weight', 'bias', 'norm-scale', 'norm-bias']);

const prod = (xs: readonly number[]): number => xs.reduce((p, d) => p * d, 1);

/**
 * Initializers and Constant-node values of a model, decoded on demand (also through Identity nodes, which
 * PyTorch uses to share deduplicated initializers), written back by `flush`.
 */
class TensorStore {
  private readonly inits = new Map<string, number>();
  private readonly constants = new Map<string, AttributeProto>();
  private readonly identityOf = new Map<string, string>();
  private readonly cache = new Map<string, HostTensor>();
  private readonly changed = new Set<string>();
  private readonly baseDir?: string;

  constructor(private readonly model: OnnxModel) {
    const g = model.proto.graph!;
    (g.initializer ?? []).forEach((t, i) => this.inits.set(t.name ?? '', i));
    for (const n of g.node ?? []) {
      const value = n.opType === 'Constant' ? (n.attribute ?? []).find((a) => a.name === 'value') : undefined;
      if (value && n.output?.[0]) this.constants.set(n.output[0], value);
      if (n.opType === 'Identity' && n.input?.[0] && n.output?.[0]) this.identityOf.set(n.output[0], n.input[0]);
    }
    this.baseDir = model.file ? path.dirname(model.file) : undefined;
  }

  /** An initializer or a Constant node's output (what `set` may rewrite). */
  isStored(name: string): boolean {
    return this.inits.has(name) || this.constants.has(name);
  }

  get(name: string): HostTensor | undefined {
    for (let hops = 0; hops < 16 && !this.isStored(name); hops++) {
      const src = this.identityOf.get(name);
      if (src === undefined) return undefined;
      name = src;
    }
    const hit = this.cache.get(name);
    if (hit) return hit;
    const g = this.model.proto.graph!;
    const i = this.inits.get(name);
    const proto = i !== undefined ? g.initializer![i]! : this.constants.get(name)?.t;
    if (!proto) return undefined;
    const t = decodeTensor(proto, { baseDir: this.baseDir, where: `tensor '${name}'` });
    this.cache.set(name, t);
    return t;
  }

  set(name: string, t: HostTensor): void {
    if (!this.isStored(name)) throw new OnnxError(`tensor '${name}' is neither an initializer nor a Constant node's value`);
    this.cache.set(name, t);
    this.changed.add(name);
  }

  /** A new initializer. */
  add(name: string, t: HostTensor): void {
    const g = this.model.proto.graph!;
    g.initializer = g.initializer ?? [];
    this.inits.set(name, g.initializer.length);
    g.initializer.push(onnx.TensorProto.create(encodeTensor(name, t)));
    this.cache.set(name, t);
    this.changed.add(name); // written again by flush: callers may still fill in its values
  }

  flush(): void {
    const g = this.model.proto.graph!;
    for (const name of this.changed) {
      const t = this.cache.get(name)!;
      const i = this.inits.get(name);
      if (i !== undefined) {
        const fresh = onnx.TensorProto.create(encodeTensor(name, t));
        if (g.initializer![i]!.docString) fresh.docString = g.initializer![i]!.docString;
        g.initializer![i] = fresh;
      } else {
        this.constants.get(name)!.t = onnx.TensorProto.create(encodeTensor(name, t));
      }
    }
    this.changed.clear();
  }
}

/** Edits of a model's graph in place: tensors, fresh names, and private copies of shared constants. */
class GraphEditor {
  readonly store: TensorStore;
  readonly nodes: NodeProto[];
  /** how many node inputs name each value */
  readonly refs = new Map<string, number>();
  private readonly names = new Set<string>();

  constructor(readonly model: OnnxModel) {
    const g = model.proto.graph!;
    this.store = new TensorStore(model);
    this.nodes = g.node ?? [];
    for (const n of this.nodes) for (const i of n.input ?? []) if (i) this.refs.set(i, (this.refs.get(i) ?? 0) + 1);
    for (const o of g.output ?? []) this.refs.set(o.name ?? '', (this.refs.get(o.name ?? '') ?? 0) + 1);
    for (const t of g.initializer ?? []) this.names.add(t.name ?? '');
    for (const i of g.input ?? []) this.names.add(i.name ?? '');
    for (const n of this.nodes) for (const o of n.output ?? []) this.names.add(o);
  }

  unique(base: string): string {
    let name = base;
    for (let k = 1; this.names.has(name); k++) name = `${base}_${k}`;
    this.names.add(name);
    return name;
  }

  /** The constant node `index` reads at input `slot`. */
  input(index: number, slot: number): HostTensor | undefined {
    const name = this.nodes[index]?.input?.[slot];
    return name ? this.store.get(name) : undefined;
  }

  /** Point input `slot` of node `index` at `name`. */
  rewire(index: number, slot: number, name: string): void {
    const node = this.nodes[index]!;
    const inputs = (node.input ?? []).slice();
    while (inputs.length <= slot) inputs.push('');
    const old = inputs[slot];
    if (old) this.refs.set(old, (this.refs.get(old) ?? 1) - 1);
    inputs[slot] = name;
    node.input = inputs;
    this.refs.set(name, (this.refs.get(name) ?? 0) + 1);
  }

  /**
   * A stored tensor that only node `index` reads at input `slot`: the one it reads when nothing else does,
   * otherwise a private copy (shared or Identity-fed constants), so editing it changes nothing else.
   */
  own(index: number, slot: number): string {
    const name = this.nodes[index]?.input?.[slot] ?? '';
    if (this.store.isStored(name) && this.refs.get(name) === 1) return name;
    const t = this.store.get(name);
    if (!t) throw new OnnxError(`${this.nodes[index]?.opType} node '${this.nodes[index]?.name}': input '${name}' is not a stored constant`);
    const copy = this.unique(name);
    this.store.add(copy, { ...t, data: t.data.slice() as typeof t.data });
    this.rewire(index, slot, copy);
    return copy;
  }

  /** Drop Identity/Constant nodes and initializers that nothing reads any more, and value_info of values gone. */
  dropUnused(): void {
    const g = this.model.proto.graph!;
    let nodes = g.node ?? [];
    for (let changed = true; changed;) {
      changed = false;
      nodes = nodes.filter((n) => {
        const dead = (n.opType === 'Identity' || n.opType === 'Constant') && (n.output ?? []).every((o) => !this.refs.get(o));
        if (dead) {
          changed = true;
          for (const i of n.input ?? []) if (i) this.refs.set(i, (this.refs.get(i) ?? 1) - 1);
        }
        return !dead;
      });
    }
    g.node = nodes;
    const gone = new Set((g.initializer ?? []).map((t) => t.name ?? '').filter((n) => !this.refs.get(n)));
    g.initializer = (g.initializer ?? []).filter((t) => !gone.has(t.name ?? ''));
    g.input = (g.input ?? []).filter((i) => !gone.has(i.name ?? ''));
    const defined = new Set([...(g.initializer ?? []).map((t) => t.name ?? ''), ...(g.input ?? []).map((i) => i.name ?? ''), ...nodes.flatMap((n) => n.output ?? [])]);
    g.valueInfo = (g.valueInfo ?? []).filter((v) => defined.has(v.name ?? ''));
  }
}

function floatData(t: HostTensor): Float32Array | Float64Array {
  if (t.data instanceof Float32Array || t.data instanceof Float64Array) return t.data;
  throw new OnnxError(`expected a float tensor, got ${t.dtype}`);
}

/** `t` with only the given indices along `axis`. */
function take(t: HostTensor, axis: number, keep: readonly number[]): HostTensor {
  const dim = t.shape[axis]!;
  const inner = prod(t.shape.slice(axis + 1));
  const outer = prod(t.shape.slice(0, axis));
  const shape = t.shape.slice();
  shape[axis] = keep.length;
  const data = allocate(t.dtype, prod(shape));
  const src = t.data as unknown as ArrayLike<unknown>;
  const dst = data as unknown as unknown[];
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < keep.length; k++) {
      const from = (o * dim + keep[k]!) * inner;
      const to = (o * keep.length + k) * inner;
      for (let i = 0; i < inner; i++) dst[to + i] = src[from + i];
    }
  }
  return { dtype: t.dtype, shape, data };
}

/** `t` with the given indices along `axis` set to zero. */
function zeroAlong(t: HostTensor, axis: number, indices: Iterable<number>): HostTensor {
  const data = floatData(t).slice();
  const dim = t.shape[axis]!;
  const inner = prod(t.shape.slice(axis + 1));
  const outer = prod(t.shape.slice(0, axis));
  for (const c of indices) for (let o = 0; o < outer; o++) data.fill(0, (o * dim + c) * inner, (o * dim + c + 1) * inner);
  return { dtype: t.dtype, shape: t.shape, data };
}

/** Removed channels per group (sorted), after checking the kept lists. */
function removedChannels(analysis: ChannelAnalysis, kept: KeptChannels): number[][] {
  if (kept.length > analysis.groups.length) throw new UserError(`kept channels are given for ${kept.length} groups, the model has ${analysis.groups.length}`);
  return analysis.groups.map((g, i) => {
    const k = kept[i];
    if (!k) return [];
    const set = new Set<number>();
    for (const c of k) {
      if (!Number.isInteger(c) || c < 0 || c >= g.channels) throw new UserError(`group ${i} (${describe(g)}): kept channel ${c} is not in 0..${g.channels - 1}`);
      set.add(c);
    }
    if (!set.size) throw new UserError(`group ${i} (${describe(g)}) must keep at least one of its ${g.channels} channels`);
    return Array.from({ length: g.channels }, (_, c) => c).filter((c) => !set.has(c));
  });
}

function describe(g: ChannelGroup): string {
  return g.producers.map((p) => p.node).join(', ');
}

/** Indices along `axis` of slice entries, for the removed channels. */
function sliceIndices(offset: number, block: number, channels: readonly number[]): number[] {
  const out: number[] = [];
  for (const c of channels) for (let j = 0; j < block; j++) out.push(offset + c * block + j);
  return out;
}

/**
 * The masked network: a copy of `model` where, for every removed channel, the producers' weight rows and
 * biases (depthwise convolutions of the group included) and the BatchNormalization scale and shift are 0.
 * Shared constants get private copies; nodes keep their places, so `analysis` still applies to the copy.
 */
export function maskChannels(model: OnnxModel, analysis: ChannelAnalysis, kept: KeptChannels): OnnxModel {
  const removed = removedChannels(analysis, kept);
  const out = cloneModel(densifySparse(model));
  const ed = new GraphEditor(out);
  analysis.groups.forEach((g, gi) => {
    if (!removed[gi]!.length) return;
    for (const s of g.slices) {
      if (!MASKED_ROLES.has(s.role)) continue;
      const name = ed.own(s.index, s.input);
      ed.store.set(name, zeroAlong(ed.store.get(name)!, s.axis, sliceIndices(s.offset, s.block, removed[gi]!)));
    }
  });
  ed.store.flush();
  return out;
}

export interface ShrinkOptions {
  /** re-trace the shrunk model and check every channel-carrying value has the expected size (default true) */
  validate?: boolean;
  /** input shapes for tracing, as for the prepared graph the analysis came from */
  inputShapes?: PrepareOptions['inputShapes'];
}

/**
 * A new model with the removed channels physically gone. `model` is the network to reproduce (normally
 * `maskChannels`' output, or a model whose removed channels are constant for another reason); `analysis`
 * comes from `channelGroups` on a model with the same nodes (`model` itself, or the model it was masked from).
 */
export function shrinkChannels(model: OnnxModel, analysis: ChannelAnalysis, kept: KeptChannels, opts: ShrinkOptions = {}): OnnxModel {
  const removed = removedChannels(analysis, kept);
  const out = cloneModel(densifySparse(model));
  const g = out.proto.graph!;
  const ed = new GraphEditor(out);
  const { store, nodes } = ed;
  const { layouts, steps, consumers, folded } = analysis.flow;
  for (const c of consumers) {
    if (nodes[c.node.index]?.opType !== c.node.opType) throw new UserError(`the model does not have the nodes the channel analysis was made on (${c.node.label})`);
  }

  // removed positions along the channel axis of every traced value
  const removedAt = new Map<string, number[]>();
  for (const [name, l] of layouts) {
    const pos = l.segments.flatMap((s) => (s.group >= 0 ? sliceIndices(s.offset, s.block, removed[s.group]!) : []));
    if (pos.length) removedAt.set(name, pos.sort((a, b) => a - b));
  }
  const channelAt = (name: string, p: number): string => {
    const s = layouts.get(name)!.segments.find((x) => x.group >= 0 && p >= x.offset && p < x.offset + x.channels * x.block)!;
    return `removed channel ${Math.floor((p - s.offset) / s.block)} of group ${s.group} (${describe(analysis.groups[s.group]!)})`;
  };

  // 1. the constant every removed channel carries, through the graph
  const state = new Map<string, Float64Array>();
  const values: ChannelValues = {
    get: (n) => state.get(n),
    set: (n, v) => void state.set(n, v),
    input: (index, slot) => ed.input(index, slot) ?? folded.get(nodes[index]?.input?.[slot] ?? ''),
  };
  for (const s of steps) s.evaluate(values);

  // 2. fold nonzero constants into the bias of the layer reading them
  /** new biases: sliced by the removed positions of the value they add to */
  const newBiases: { tensor: string; value: string }[] = [];
  const insertions: { after: number; node: NodeProto }[] = [];
  /** The bias values (`size`, one per output channel) that node `index` alone adds, at input `slot`. */
  const ownBias = (index: number, slot: number, size: number, dtype: DType, value: string, label: string): Float32Array | Float64Array => {
    const name = nodes[index]!.input?.[slot];
    const existing = name ? ed.input(index, slot) : undefined;
    if (name && !existing) throw new OnnxError(`${label}: its bias '${name}' is computed by the graph, so a removed channel's constant cannot be folded into it`);
    if (existing && prod(existing.shape) === size && existing.shape[existing.shape.length - 1] === size) {
      const own = ed.own(index, slot);
      const t = store.get(own)!;
      const data = floatData(t).slice();
      store.set(own, { ...t, data });
      return data;
    }
    const init = existing ? constantPerPosition(existing, existing.shape.length - 1, size) : new Float64Array(size);
    if (init.some(Number.isNaN)) throw new OnnxError(`${label}: its bias '${name}' is not one value per output channel, so a removed channel's constant cannot be folded into it`);
    const fresh: HostTensor = { dtype, shape: [size], data: allocate(dtype, size) };
    (fresh.data as Float32Array).set(init);
    const freshName = ed.unique(`${nodes[index]!.name || value}.folded_bias`);
    store.add(freshName, fresh);
    ed.rewire(index, slot, freshName);
    newBiases.push({ tensor: freshName, value });
    return fresh.data as Float32Array;
  };

  for (const c of consumers) {
    const pos = removedAt.get(c.input);
    if (!pos) continue;
    const carried = state.get(c.input);
    const nonzero: [number, number][] = [];
    for (const p of pos) {
      const v = carried?.[p] ?? NaN;
      if (Number.isNaN(v)) throw new OnnxError(`${channelAt(c.input, p)} is not constant where ${c.node.label} reads it: its weights are not zero; mask the removed channels first (maskChannels) or keep them`);
      if (v !== 0) nonzero.push([p, v]);
    }
    if (!nonzero.length) continue;
    const w = ed.input(c.node.index, 1)!;
    const wd = floatData(w);
    const [p0, v0] = nonzero[0]!;
    const where = `${channelAt(c.input, p0)} carries the constant ${v0.toPrecision(4)} into ${c.node.label}`;
    const out0 = c.node.outputs[0]!;
    if (c.node.opType === 'Conv') {
      const pads = c.node.attrs.get('pads');
      const autoPad = c.node.attrs.get('auto_pad');
      if ((Array.isArray(pads) && pads.some((x) => x !== 0)) || (typeof autoPad === 'string' && autoPad.startsWith('SAME'))) {
        throw new OnnxError(`${where}, which pads its input, so it cannot be folded into its bias exactly; zero the BatchNormalization shift of removed channels (maskChannels does) or keep the channel`);
      }
      const [cout, cin] = [w.shape[0]!, w.shape[1]!];
      const k = prod(w.shape.slice(2));
      const bias = ownBias(c.node.index, 2, cout, w.dtype, out0, c.node.label);
      for (let o = 0; o < cout; o++) {
        let s = 0;
        for (const [p, v] of nonzero) for (let i = 0; i < k; i++) s += v * wd[(o * cin + p) * k + i]!;
        bias[o] += s;
      }
    } else if (c.node.opType === 'Gemm') {
      const transB = c.node.attrs.get('transB') === 1;
      const alpha = typeof c.node.attrs.get('alpha') === 'number' ? (c.node.attrs.get('alpha') as number) : 1;
      const beta = typeof c.node.attrs.get('beta') === 'number' ? (c.node.attrs.get('beta') as number) : 1;
      if (beta === 0) throw new OnnxError(`${where}, whose beta is 0, so it has no bias to fold it into`);
      const [rows, cols] = [w.shape[0]!, w.shape[1]!];
      const N = transB ? rows : cols;
      const bias = ownBias(c.node.index, 2, N, w.dtype, out0, c.node.label);
      for (let o = 0; o < N; o++) {
        let s = 0;
        for (const [p, v] of nonzero) s += v * wd[transB ? o * cols + p : p * cols + o]!;
        bias[o] += (alpha * s) / beta;
      }
    } else if (c.node.opType === 'MatMul') {
      const N = w.shape[1]!;
      const add = new Float64Array(N);
      for (let o = 0; o < N; o++) for (const [p, v] of nonzero) add[o] += v * wd[p * N + o]!;
      // x·W + b as PyTorch writes Linear on 3-D input: fold into b when the product feeds only that Add
      const readers = nodes.flatMap((n, i) => ((n.input ?? []).includes(out0) ? [i] : []));
      const biasAdd = readers.length === 1 && nodes[readers[0]!]!.opType === 'Add' ? readers[0]! : -1;
      const biasSlot = biasAdd >= 0 ? (nodes[biasAdd]!.input![0] === out0 ? 1 : 0) : -1;
      const biasNow = biasAdd >= 0 ? ed.input(biasAdd, biasSlot) : undefined;
      if (biasNow && prod(biasNow.shape) === N && biasNow.shape[biasNow.shape.length - 1] === N) {
        const bias = ownBias(biasAdd, biasSlot, N, w.dtype, out0, c.node.label);
        for (let o = 0; o < N; o++) bias[o] += add[o]!;
        continue;
      }
      const node = nodes[c.node.index]!;
      const biasName = ed.unique(`${node.name || out0}.folded_bias`);
      const fresh: HostTensor = { dtype: w.dtype, shape: [N], data: allocate(w.dtype, N) };
      (fresh.data as Float32Array).set(add);
      store.add(biasName, fresh);
      newBiases.push({ tensor: biasName, value: out0 });
      // the product gets a new name; an Add of the folded bias produces the original one
      const before = ed.unique(`${out0}.before_folded_bias`);
      node.output = [before, ...(node.output ?? []).slice(1)];
      insertions.push({ after: c.node.index, node: onnx.NodeProto.create({ opType: 'Add', name: ed.unique(`${node.name || out0}.folded_bias_add`), input: [before, biasName], output: [out0] }) });
      ed.refs.set(before, 1);
      ed.refs.set(biasName, 1);
    } else {
      throw new OnnxError(`${where}; a ${c.node.opType} spreads it unevenly over its output, so it cannot be folded exactly; zero it (maskChannels) or keep the channel`);
    }
  }

  // 3. slices: every tensor loses the removed indices along every axis that holds channels
  const cuts = new Map<string, Map<number, Set<number>>>();
  const cut = (tensor: string, axis: number, indices: Iterable<number>): void => {
    const byAxis = cuts.get(tensor) ?? new Map<number, Set<number>>();
    cuts.set(tensor, byAxis);
    const set = byAxis.get(axis) ?? new Set<number>();
    byAxis.set(axis, set);
    for (const i of indices) set.add(i);
  };
  analysis.groups.forEach((grp, gi) => {
    if (removed[gi]!.length) for (const s of grp.slices) cut(ed.own(s.index, s.input), s.axis, sliceIndices(s.offset, s.block, removed[gi]!));
  });
  for (const b of newBiases) {
    const pos = removedAt.get(b.value);
    if (pos) cut(b.tensor, 0, pos);
  }
  for (const [tensor, byAxis] of cuts) {
    let t = store.get(tensor)!;
    for (const [axis, drop] of byAxis) t = take(t, axis, Array.from({ length: t.shape[axis]! }, (_, i) => i).filter((i) => !drop.has(i)));
    store.set(tensor, t);
  }

  // 4. literal Reshape targets and depthwise group counts
  analysis.groups.forEach((grp, gi) => {
    const r = removed[gi]!.length;
    if (!r) return;
    for (const e of grp.reshapes) {
      const name = ed.own(e.index, 1);
      const t = store.get(name)!;
      const data = t.data.slice() as BigInt64Array | Int32Array;
      const now = numberAt(t, e.position) - r * e.block;
      if (now <= 0) throw new OnnxError(`Reshape node '${e.node}': its target shape would lose dimension ${e.position}`);
      data[e.position] = (data instanceof BigInt64Array ? BigInt(now) : now) as never;
      store.set(name, { ...t, data });
    }
    for (const d of grp.depthwise) {
      const attr = (nodes[d.index]!.attribute ?? []).find((a) => a.name === 'group')!;
      attr.i = Number(attr.i) - r * d.block;
    }
  });

  // 5. declared shapes of intermediate values
  for (const vi of g.valueInfo ?? []) {
    const pos = removedAt.get(vi.name ?? '');
    const l = layouts.get(vi.name ?? '');
    const dim = l ? vi.type?.tensorType?.shape?.dim?.[l.axis] : undefined;
    if (pos && dim && dim.dimValue !== null && dim.dimValue !== undefined && Number(dim.dimValue) > 0) dim.dimValue = Number(dim.dimValue) - pos.length;
  }

  store.flush();
  for (const ins of insertions.sort((a, b) => b.after - a.after)) nodes.splice(ins.after + 1, 0, ins.node);
  g.node = nodes;
  ed.dropUnused();

  if (opts.validate !== false) {
    let prepared: PreparedGraph;
    try {
      prepared = new PreparedGraph(out, { inputShapes: opts.inputShapes });
    } catch (e) {
      throw new OnnxError(`the shrunk model does not run: ${(e as Error).message}`);
    }
    for (const [name, l] of layouts) {
      const got = prepared.shapes.get(name)?.[l.axis];
      const want = l.size - (removedAt.get(name)?.length ?? 0);
      if (typeof got === 'number' && got !== want) throw new OnnxError(`the shrunk model: '${name}' has ${got} channels along axis ${l.axis}, expected ${want}`);
    }
  }
  return out;
}

/** Every producer's weight in `model` (the tensor its node reads at input 1), for `channelNorms`. */
export function producerWeights(model: OnnxModel): (p: ChannelProducer) => HostTensor | undefined {
  const ed = new GraphEditor(densifySparse(model));
  return (p) => ed.input(p.index, 1);
}

/**
 * Kept channels that remove `fraction` of every group's channels (rounded down, at least one channel kept),
 * keeping those whose producer weights have the largest L2 (or L1) norm.
 */
export function keepLargestNorms(model: OnnxModel, analysis: ChannelAnalysis, fraction: number, norm: 'l2' | 'l1' = 'l2'): number[][] {
  if (!(fraction >= 0 && fraction < 1)) throw new UserError(`the fraction of channels removed must be in [0, 1), got ${fraction}`);
  const weights = producerWeights(model);
  return analysis.groups.map((g) => largestChannels(channelNorms(g, weights, norm), Math.max(1, g.channels - Math.floor(fraction * g.channels))));
}
