// Channel dependency groups of an ONNX classifier, read from the graph's dataflow (never from layer names),
// in the spirit of Torch-Pruning's dependency graph. Every Conv/ConvTranspose/Gemm/MatMul output opens a
// channel space; spaces travel through the graph along a channel axis (BatchNormalization, elementwise
// activations, pooling, Pad, Transpose, Concat with offsets, Flatten/Reshape as blocks of features) and
// are merged where channels must stay aligned (Add/Sub/Mul/Div joins, depthwise convolutions). A group is
// one merged set: the output channels of its producers and every slice of a tensor that reads them.
// A group that meets something this analysis cannot follow exactly stays dense, with the reason.
import type { PreparedGraph } from '../graph/graph.js';
import type { OnnxModel } from '../onnx/model.js';
import { numberAt, type HostTensor } from '../onnx/tensor.js';
import { UserError } from '../util/errors.js';

type Node = PreparedGraph['runNodes'][number];
type Dim = number | string;

/** What a slice of a tensor is to the group, and what the masked network zeroes. */
export type SliceRole =
  | 'weight' // a producer's weight along its output-channel axis (depthwise convs of the group too)
  | 'bias' // a producer's bias
  | 'norm-scale' | 'norm-bias' | 'norm-mean' | 'norm-var' // BatchNormalization / InstanceNormalization
  | 'input-weight' // a consumer's weight along its input-channel (or input-feature) axis
  | 'constant'; // a per-channel constant operand (Add/Sub/Mul/Div/PRelu …)

/** Channel c of the group occupies indices offset + c·block … offset + (c+1)·block − 1 along `axis` of `tensor`. */
export interface ChannelSlice {
  /** what the node reads: an initializer, a Constant node's output, or an Identity of one (shared constants) */
  tensor: string;
  /** the node reading it, e.g. "Conv node '/conv1/Conv'" */
  node: string;
  /** that node's index in the graph and the input slot: shrinking gives a shared constant a private copy there */
  index: number;
  input: number;
  role: SliceRole;
  axis: number;
  offset: number;
  block: number;
}

export interface ChannelProducer {
  /** node name (or #index when unnamed) */
  node: string;
  /** its index in the graph; the weight is its input 1 */
  index: number;
  op: string;
  weight: string;
  /** the weight's output-channel axis; channel c is rows offset + c·block … of it */
  axis: number;
  offset: number;
  block: number;
  /** a depthwise convolution whose channels are those of its input */
  depthwise: boolean;
}

export interface ChannelGroup {
  id: number;
  channels: number;
  producers: ChannelProducer[];
  /** every tensor slice that removing a channel removes (producers' rows and biases included) */
  slices: ChannelSlice[];
  /** literal Reshape targets holding the channel count: entry `position` of `tensor` counts `block` per channel */
  reshapes: { node: string; index: number; tensor: string; position: number; block: number }[];
  /** depthwise Convs whose `group` attribute counts `block` per channel of this group */
  depthwise: { node: string; index: number; block: number }[];
  /** values carrying the channels (value_info entries to update) */
  values: { name: string; axis: number; offset: number; block: number }[];
}

export interface DenseGroup {
  /** producer node names */
  producers: string[];
  channels: number;
  reason: string;
}

/** Channels of one traced value along its channel axis: which group owns which positions (-1: a dense group). */
export interface ChannelLayout {
  axis: number;
  size: number;
  segments: { group: number; offset: number; block: number; channels: number }[];
}

/**
 * Per position along the channel axis of a traced value, the constant the value holds there for every
 * input (NaN: it varies). What shrinking needs to know about removed channels.
 */
export interface ChannelValues {
  get(name: string): Float64Array | undefined;
  set(name: string, values: Float64Array): void;
  /** current contents of the constant that node `index` (graph order) reads at input `slot` */
  input(index: number, slot: number): HostTensor | undefined;
}

/** A Conv/ConvTranspose/Gemm/MatMul reading channel positions of `input` through axis `axis` of its weight. */
export interface ChannelConsumer {
  node: Node;
  input: string;
  weight: string;
  axis: number;
}

export interface ChannelFlow {
  layouts: Map<string, ChannelLayout>;
  /** per traced node, in order: how the constants carried by channel positions go through it */
  steps: { node: Node; evaluate(values: ChannelValues): void }[];
  consumers: ChannelConsumer[];
  /** folded constants of the analysed graph */
  folded: Map<string, HostTensor>;
}

export interface ChannelAnalysis {
  groups: ChannelGroup[];
  dense: DenseGroup[];
  /** for src/prune/shrink.ts */
  flow: ChannelFlow;
}

interface Segment { space: number; offset: number; block: number }
interface Layout { axis: number; size: number; segments: Segment[] }
interface Space {
  channels: number;
  parent: number;
  /** the node whose output opened it */
  origin: string;
  reasons: string[];
  producers: ChannelProducer[];
  slices: ChannelSlice[];
  reshapes: ChannelGroup['reshapes'];
  depthwise: ChannelGroup['depthwise'];
  values: ChannelGroup['values'];
}

const UNARY: Record<string, (n: Node) => (v: number) => number> = {
  Identity: () => (v) => v,
  Dropout: () => (v) => v,
  Cast: () => (v) => v,
  Relu: () => (v) => (Number.isNaN(v) ? v : Math.max(0, v)),
  LeakyRelu: (n) => { const a = attrFloat(n, 'alpha', 0.01); return (v) => (v < 0 ? a * v : v); },
  ThresholdedRelu: (n) => { const a = attrFloat(n, 'alpha', 1); return (v) => (Number.isNaN(v) ? v : v > a ? v : 0); },
  Sigmoid: () => (v) => 1 / (1 + Math.exp(-v)),
  Tanh: () => Math.tanh,
  HardSigmoid: (n) => { const a = attrFloat(n, 'alpha', 0.2); const b = attrFloat(n, 'beta', 0.5); return (v) => (Number.isNaN(v) ? v : Math.max(0, Math.min(1, a * v + b))); },
  HardSwish: () => (v) => (Number.isNaN(v) ? v : v * Math.max(0, Math.min(1, v / 6 + 0.5))),
  Elu: (n) => { const a = attrFloat(n, 'alpha', 1); return (v) => (v < 0 ? a * (Math.exp(v) - 1) : v); },
  Selu: (n) => { const a = attrFloat(n, 'alpha', 1.67326319217681884765625); const g = attrFloat(n, 'gamma', 1.05070102214813232421875); return (v) => (v <= 0 ? g * a * (Math.exp(v) - 1) : g * v); },
  Celu: (n) => { const a = attrFloat(n, 'alpha', 1); return (v) => (Number.isNaN(v) ? v : Math.max(0, v) + Math.min(0, a * (Math.exp(v / a) - 1))); },
  Softplus: () => (v) => Math.log1p(Math.exp(v)),
  Softsign: () => (v) => v / (1 + Math.abs(v)),
  Abs: () => Math.abs,
  Neg: () => (v) => -v,
  Exp: () => Math.exp,
  Sqrt: () => Math.sqrt,
  Reciprocal: () => (v) => 1 / v,
  Sin: () => Math.sin,
  Cos: () => Math.cos,
  Sign: () => Math.sign,
  Floor: () => Math.floor,
  Ceil: () => Math.ceil,
  // erf has no exact JS counterpart: only erf(0) = 0 is relied on, other constants count as varying
  Erf: () => (v) => (v === 0 ? 0 : NaN),
};
const BINARY: Record<string, (a: number, b: number) => number> = {
  Add: (a, b) => a + b,
  Sub: (a, b) => a - b,
  // 0 · anything finite is 0, even where the other operand varies
  Mul: (a, b) => (a === 0 || b === 0 ? 0 : a * b),
  Div: (a, b) => a / b,
  Pow: (a, b) => a ** b,
  PRelu: (x, slope) => (x < 0 ? slope * x : x),
  Sum: (a, b) => a + b,
  Max: Math.max,
  Min: Math.min,
};
const POOLS = new Set(['MaxPool', 'AveragePool', 'GlobalAveragePool', 'GlobalMaxPool', 'LpPool', 'GlobalLpPool']);
const REDUCES = new Set(['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceSum']);

function attrInt(n: Node, name: string, dflt: number): number {
  const v = n.attrs.get(name);
  return typeof v === 'number' ? v : dflt;
}
function attrFloat(n: Node, name: string, dflt: number): number {
  const v = n.attrs.get(name);
  return typeof v === 'number' ? v : dflt;
}
function attrInts(n: Node, name: string): number[] | undefined {
  const v = n.attrs.get(name);
  return Array.isArray(v) && v.every((x) => typeof x === 'number') ? (v as number[]) : undefined;
}
function attrString(n: Node, name: string, dflt: string): string {
  const v = n.attrs.get(name);
  return typeof v === 'string' ? v : dflt;
}
const nodeName = (n: Node): string => n.name || `#${n.index}`;
const prodNum = (ds: readonly Dim[]): number => ds.reduce<number>((p, d) => p * (typeof d === 'number' ? d : 1), 1);
const symCount = (ds: readonly Dim[]): number => ds.filter((d) => typeof d !== 'number').length;

/** Float values of a tensor as numbers. */
function values(t: HostTensor): ArrayLike<number> {
  return t.data instanceof Float32Array || t.data instanceof Float64Array ? t.data : Array.from({ length: t.data.length }, (_, i) => numberAt(t, i));
}

/**
 * The value a constant holds at each of `size` positions along its axis `axis` (aligned with a channel
 * axis), when it is the same over all its other axes; NaN where it is not. `axis` < 0 or a dimension of 1
 * broadcasts one value over every position.
 */
export function constantPerPosition(t: HostTensor, axis: number, size: number): Float64Array {
  const d = values(t);
  const out = new Float64Array(size);
  const shape = t.shape;
  const dim = axis >= 0 && axis < shape.length ? shape[axis]! : 1;
  const inner = axis >= 0 ? prodNum(shape.slice(axis + 1)) : d.length;
  const outer = axis >= 0 ? prodNum(shape.slice(0, axis)) : 1;
  const at = (p: number): number => {
    let v = NaN;
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const x = d[(o * dim + p) * inner + i]!;
        if (Number.isNaN(v)) v = x;
        else if (x !== v) return NaN;
      }
    }
    return d.length ? v : NaN;
  };
  if (dim === 1) return out.fill(at(0));
  for (let p = 0; p < size; p++) out[p] = at(p);
  return out;
}

/** Whether every element of slice `index` along `axis` of `t` is zero. */
export function sliceIsZero(t: HostTensor, axis: number, index: number): boolean {
  const d = values(t);
  const dim = t.shape[axis]!;
  const inner = prodNum(t.shape.slice(axis + 1));
  const outer = prodNum(t.shape.slice(0, axis));
  for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) if (d[(o * dim + index) * inner + i] !== 0) return false;
  return true;
}

/** Sum over slice `index` along `axis` of `t`. */
function sliceSum(t: HostTensor, axis: number, index: number): number {
  const d = values(t);
  const dim = t.shape[axis]!;
  const inner = prodNum(t.shape.slice(axis + 1));
  const outer = prodNum(t.shape.slice(0, axis));
  let s = 0;
  for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) s += d[(o * dim + index) * inner + i]!;
  return s;
}

const nan = (size: number): Float64Array => new Float64Array(size).fill(NaN);

/**
 * The channel groups of a loaded model, from its prepared graph (nodes that run after folding, folded
 * constants, traced shapes).
 */
export function channelGroups(model: OnnxModel, prepared: PreparedGraph): ChannelAnalysis {
  // the prepared graph holds (a densified copy of) the model it was built from: same nodes, same order
  const nodes = model.proto.graph?.node ?? [];
  if (nodes.length !== prepared.nodes.length || prepared.nodes.some((n) => nodes[n.index]?.opType !== n.opType)) {
    throw new UserError(`the prepared graph was not built from this model${model.file ? ` ('${model.file}')` : ''}`);
  }
  return new ChannelTracer(prepared).run();
}

class ChannelTracer {
  private readonly spaces: Space[] = [];
  private readonly layouts = new Map<string, Layout>();
  private readonly steps: ChannelFlow['steps'] = [];
  private readonly consumers: ChannelConsumer[] = [];
  /** initializer names and Constant-node outputs of the original graph: constants a shrink can rewrite */
  private readonly literals = new Set<string>();
  /** how many node inputs (and graph outputs) name each value in the original graph */
  private readonly refs = new Map<string, number>();
  private readonly identityOf = new Map<string, string>();
  /** the node computing each value (folded ones too) */
  private readonly producerOf = new Map<string, Node>();

  constructor(private readonly g: PreparedGraph) {
    const graph = g.model.proto.graph!;
    for (const t of graph.initializer ?? []) this.literals.add(t.name ?? '');
    for (const n of graph.node ?? []) {
      for (const i of n.input ?? []) if (i) this.refs.set(i, (this.refs.get(i) ?? 0) + 1);
      if (n.opType === 'Constant' && (n.attribute ?? []).some((a) => a.name === 'value') && n.output?.[0]) this.literals.add(n.output[0]);
      if (n.opType === 'Identity' && n.input?.[0] && n.output?.[0]) this.identityOf.set(n.output[0], n.input[0]);
    }
    for (const o of graph.output ?? []) this.refs.set(o.name ?? '', (this.refs.get(o.name ?? '') ?? 0) + 1);
    for (const n of g.nodes) for (const o of n.outputs) if (o) this.producerOf.set(o, n);
  }

  run(): ChannelAnalysis {
    const ran = new Set<number>();
    for (const n of this.g.runNodes) {
      ran.add(n.index);
      const ins = n.inputs.map((i) => (i ? this.layouts.get(i) : undefined));
      this.visit(n, ins);
    }
    const folded = new Set(this.g.folded.map((n) => n.index));
    for (const n of this.g.nodes) {
      if (ran.has(n.index) || folded.has(n.index)) continue;
      for (const i of n.inputs) {
        const l = i ? this.layouts.get(i) : undefined;
        if (l) this.denseAll(l, `${n.label} reads them and no graph output uses it`);
      }
    }
    for (const o of this.g.outputs) {
      const l = this.layouts.get(o);
      if (l) this.denseAll(l, `they are graph output '${o}' (the classes)`);
    }
    return this.finish();
  }

  // ---- constants and shapes ---------------------------------------------------------------------------

  /** A constant's value, also behind Identity nodes (PyTorch shares deduplicated initializers through them). */
  private constant(name: string | undefined): HostTensor | undefined {
    for (let hops = 0; name && hops < 16; hops++) {
      const t = this.g.paramInit.get(name) ?? this.g.consts.get(name);
      if (t) return t;
      name = this.identityOf.get(name);
    }
    return undefined;
  }
  private dims(name: string): Dim[] | undefined {
    return this.g.shapes.get(name) ?? this.constant(name)?.shape ?? this.g.inputs.find((i) => i.name === name)?.shape;
  }
  private rank(name: string): number {
    return this.dims(name)?.length ?? -1;
  }
  /**
   * Why `name` cannot be sliced by a shrink (undefined: it can): it must be stored (an initializer or a
   * Constant node), possibly behind Identity nodes, as PyTorch shares deduplicated initializers.
   */
  private notSliceable(name: string, what: string, n: Node): string | undefined {
    for (let hops = 0; hops < 16; hops++) {
      if (this.literals.has(name)) return undefined;
      const src = this.identityOf.get(name);
      if (src === undefined) break;
      name = src;
    }
    return `${n.label}: its ${what} '${name}' is computed by the graph, not stored`;
  }
  /** An integer vector given as attribute (older opsets) or as a constant input. */
  private intsOf(n: Node, attr: string, slot: number): number[] | undefined {
    const a = attrInts(n, attr);
    if (a) return a;
    const t = this.constant(n.inputs[slot]);
    return t ? Array.from(values(t)) : undefined;
  }

  // ---- spaces -----------------------------------------------------------------------------------------

  private newSpace(channels: number, origin: Node): number {
    this.spaces.push({ channels, parent: this.spaces.length, origin: nodeName(origin), reasons: [], producers: [], slices: [], reshapes: [], depthwise: [], values: [] });
    return this.spaces.length - 1;
  }
  private find(s: number): number {
    while (this.spaces[s]!.parent !== s) s = this.spaces[s]!.parent = this.spaces[this.spaces[s]!.parent]!.parent;
    return s;
  }
  private union(a: number, b: number): void {
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra !== rb) this.spaces[rb]!.parent = ra;
  }
  private dense(space: number, reason: string): void {
    const s = this.spaces[space]!;
    if (!s.reasons.includes(reason)) s.reasons.push(reason);
  }
  private denseAll(l: Layout | undefined, reason: string): void {
    for (const s of l?.segments ?? []) this.dense(s.space, reason);
  }
  private slice(seg: Segment, n: Node, input: number, role: SliceRole, axis: number, scale = 1): void {
    this.spaces[seg.space]!.slices.push({ tensor: n.inputs[input]!, node: n.label, index: n.index, input, role, axis, offset: seg.offset * scale, block: seg.block * scale });
  }
  private assign(name: string, l: Layout): void {
    this.layouts.set(name, l);
    for (const s of l.segments) this.spaces[s.space]!.values.push({ name, axis: l.axis, offset: s.offset, block: s.block });
  }
  private step(n: Node, evaluate: (v: ChannelValues) => void): void {
    this.steps.push({ node: n, evaluate });
  }
  /** Layouts of the same shape (same axis, size and segment positions), so their spaces can be merged pairwise. */
  private sameShape(a: Layout, b: Layout, axisA: number, axisB: number): boolean {
    if (axisA !== axisB || a.size !== b.size || a.segments.length !== b.segments.length) return false;
    return a.segments.every((s, i) => {
      const t = b.segments[i]!;
      return s.offset === t.offset && s.block === t.block && this.spaces[s.space]!.channels === this.spaces[t.space]!.channels;
    });
  }

  // ---- nodes ------------------------------------------------------------------------------------------

  private visit(n: Node, ins: (Layout | undefined)[]): void {
    const op = n.opType;
    const x = ins[0];
    const out = n.outputs[0] ?? '';
    if (op === 'Conv') return this.conv(n, ins);
    if (op === 'ConvTranspose') return this.convTranspose(n, ins);
    if (op === 'Gemm') return this.gemm(n, ins);
    if (op === 'MatMul') return this.matmul(n, ins);
    if (op === 'BatchNormalization' || op === 'InstanceNormalization') return this.norm(n, ins);
    if (op === 'Shape' || op === 'Size') return; // they read only the shape, which a shrink changes consistently
    if (ins.every((l) => !l)) return; // no prunable channels flow through this node
    if (Object.hasOwn(BINARY, op) || op === 'Mean') return this.elementwise(n, ins);
    if (op === 'Concat') return this.concat(n, ins);
    // the remaining ops take their data as input 0, and parameters after it
    if (!x || ins.slice(1).some((l) => l)) {
      for (const l of ins) this.denseAll(l, `${n.label} reads them as a parameter, not as data`);
      return;
    }
    if (Object.hasOwn(UNARY, op)) {
      const f = UNARY[op]!(n);
      for (const o of n.outputs) if (o) this.assign(o, x);
      this.step(n, (v) => {
        const a = v.get(n.inputs[0]!);
        if (a) for (const o of n.outputs) if (o) v.set(o, a.map(f));
      });
      return;
    }
    if (op === 'Clip') return this.clip(n, x);
    if (POOLS.has(op)) return this.pool(n, x);
    if (op === 'Pad') return this.pad(n, x);
    if (op === 'Transpose') {
      const r = this.rank(n.inputs[0]!);
      const perm = attrInts(n, 'perm') ?? Array.from({ length: r }, (_, i) => r - 1 - i);
      return this.move(n, x, perm.indexOf(x.axis));
    }
    if (op === 'Unsqueeze') {
      const r = this.rank(out);
      const axes = (this.intsOf(n, 'axes', 1) ?? []).map((a) => (a < 0 ? a + r : a));
      let seen = -1;
      for (let k = 0; k < r; k++) if (!axes.includes(k) && ++seen === x.axis) return this.move(n, x, k);
      return this.denseAll(x, `${n.label}: its axes could not be read`);
    }
    if (op === 'Squeeze') {
      const inDims = this.dims(n.inputs[0]!) ?? [];
      const given = this.intsOf(n, 'axes', 1);
      const axes = given ? given.map((a) => (a < 0 ? a + inDims.length : a)) : inDims.flatMap((d, i) => (d === 1 ? [i] : []));
      if (axes.includes(x.axis)) return this.denseAll(x, `${n.label} removes the channel axis`);
      return this.move(n, x, x.axis - axes.filter((a) => a < x.axis).length);
    }
    if (op === 'Flatten' || op === 'Reshape') return this.reshape(n, x, ins);
    if (op === 'Softmax' || op === 'LogSoftmax' || op === 'Hardmax') return this.softmax(n, x);
    if (REDUCES.has(op)) return this.reduce(n, x);
    for (const l of ins) this.denseAll(l, `${n.label} reads them and onnx-hydra does not follow channels through ${op}`);
  }

  /** Channels kept dense by an op that still keeps them in place: they travel on, so what joins them stays dense too. */
  private passDense(n: Node, x: Layout, reason: string): void {
    this.denseAll(x, reason);
    this.assign(n.outputs[0]!, x);
    this.step(n, (v) => v.set(n.outputs[0]!, nan(x.size)));
  }

  /** An op that keeps every element of its input in place but may renumber the channel axis. */
  private move(n: Node, x: Layout, axis: number): void {
    this.assign(n.outputs[0]!, { ...x, axis });
    this.step(n, (v) => {
      const a = v.get(n.inputs[0]!);
      if (a) v.set(n.outputs[0]!, a);
    });
  }

  /** The output space of a producer whose weight is input 1 (and bias input 2, when `biasAxis` is given). */
  private producerSpace(n: Node, channels: number, weightAxis: number, biasAxis: number | undefined, denseReason?: string): Segment {
    const space = this.newSpace(channels, n);
    const seg = { space, offset: 0, block: 1 };
    const [, weight, bias] = n.inputs;
    const why = denseReason ?? (weight ? this.notSliceable(weight, 'weight', n) : `${n.label} has no constant weight`) ?? (bias && biasAxis !== undefined ? this.notSliceable(bias, 'bias', n) : undefined);
    if (why) this.dense(space, why);
    else {
      this.spaces[space]!.producers.push({ node: nodeName(n), index: n.index, op: n.opType, weight: weight!, axis: weightAxis, offset: 0, block: 1, depthwise: false });
      this.slice(seg, n, 1, 'weight', weightAxis);
      if (bias && biasAxis !== undefined) this.slice(seg, n, 2, 'bias', biasAxis);
    }
    return seg;
  }

  /** A consumer reading `x` along `weightAxis` of its weight (input 1). */
  private consume(n: Node, x: Layout | undefined, weightAxis: number): void {
    if (!x) return;
    const weight = n.inputs[1]!;
    const why = this.notSliceable(weight, 'weight', n);
    if (why) return this.denseAll(x, why);
    for (const s of x.segments) this.slice(s, n, 1, 'input-weight', weightAxis);
    this.consumers.push({ node: n, input: n.inputs[0]!, weight, axis: weightAxis });
  }

  private conv(n: Node, ins: (Layout | undefined)[]): void {
    const [xName, wName, bName] = n.inputs;
    const x = ins[0];
    const w = this.constant(wName);
    const out = n.outputs[0]!;
    for (const l of ins.slice(1)) this.denseAll(l, `${n.label} uses them as its weight or bias`);
    if (!w || !wName) {
      this.denseAll(x, `${n.label} has a computed weight`);
      const seg = this.producerSpace(n, (this.dims(out)?.[1] as number | undefined) ?? 0, 0, undefined, `${n.label} has a computed weight`);
      this.assign(out, { axis: 1, size: this.spaces[seg.space]!.channels, segments: [seg] });
      return;
    }
    const group = attrInt(n, 'group', 1);
    const cout = w.shape[0]!;
    const cin = w.shape[1]! * group;
    if (x && x.axis !== 1) this.denseAll(x, `${n.label} reads them along axis ${x.axis}, not as input channels`);
    const bias = bName || undefined;
    if (group === 1) {
      if (x && x.axis === 1) this.consume(n, x, 1);
      const seg = this.producerSpace(n, cout, 0, 0);
      this.assign(out, { axis: 1, size: cout, segments: [seg] });
      this.step(n, (v) => {
        const wt = v.input(n.index, 1)!;
        const b = bias ? v.input(n.index, 2) : undefined;
        const bv = b ? values(b) : undefined;
        v.set(out, Float64Array.from({ length: cout }, (_, o) => (sliceIsZero(wt, 0, o) ? (bv?.[o] ?? 0) : NaN)));
      });
      return;
    }
    if (group === cin && w.shape[1] === 1 && cout % cin === 0) {
      // depthwise: output channel c·m + j reads input channel c only, so the channels stay the input's
      const m = cout / cin;
      const padded = (attrInts(n, 'pads') ?? []).some((p) => p !== 0) || !['NOTSET', 'VALID'].includes(attrString(n, 'auto_pad', 'NOTSET'));
      if (x && x.axis === 1) {
        const why = this.notSliceable(wName, 'weight', n) ?? (bias ? this.notSliceable(bias, 'bias', n) : undefined);
        if (why) this.denseAll(x, why);
        else {
          for (const s of x.segments) {
            const sp = this.spaces[s.space]!;
            sp.producers.push({ node: nodeName(n), index: n.index, op: 'Conv', weight: wName, axis: 0, offset: s.offset * m, block: s.block * m, depthwise: true });
            this.slice(s, n, 1, 'weight', 0, m);
            if (bias) this.slice(s, n, 2, 'bias', 0, m);
            sp.depthwise.push({ node: nodeName(n), index: n.index, block: s.block });
          }
        }
        this.assign(out, { axis: 1, size: cout, segments: x.segments.map((s) => ({ space: s.space, offset: s.offset * m, block: s.block * m })) });
      }
      this.step(n, (v) => {
        const a = v.get(xName!);
        if (!a) return;
        const wt = v.input(n.index, 1)!;
        const bv = bias ? values(v.input(n.index, 2)!) : undefined;
        v.set(out, Float64Array.from({ length: cout }, (_, q) => {
          const b = bv?.[q] ?? 0;
          const c = Math.floor(q / m);
          if (sliceIsZero(wt, 0, q) || a[c] === 0) return b;
          // a constant input stays constant only where no output sees the zero padding
          return padded ? NaN : a[c]! * sliceSum(wt, 0, q) + b;
        }));
      });
      return;
    }
    this.denseAll(x, `${n.label} is a grouped convolution (group ${group} of ${cin} channels) and reads them`);
    const seg = this.producerSpace(n, cout, 0, 0, `${n.label} is a grouped convolution (group ${group}); its groups must keep equal sizes`);
    this.assign(out, { axis: 1, size: cout, segments: [seg] });
  }

  private convTranspose(n: Node, ins: (Layout | undefined)[]): void {
    const [, wName, bName] = n.inputs;
    const x = ins[0];
    const w = this.constant(wName);
    const out = n.outputs[0]!;
    for (const l of ins.slice(1)) this.denseAll(l, `${n.label} uses them as its weight or bias`);
    const group = attrInt(n, 'group', 1);
    const cout = w ? w.shape[1]! * group : (this.dims(out)?.[1] as number) ?? 0;
    if (!w || !wName || group !== 1) {
      const why = !w ? `${n.label} has a computed weight` : `${n.label} is a grouped transposed convolution (group ${group})`;
      this.denseAll(x, why);
      const seg = this.producerSpace(n, cout, 0, undefined, why);
      this.assign(out, { axis: 1, size: cout, segments: [seg] });
      return;
    }
    if (x && x.axis !== 1) this.denseAll(x, `${n.label} reads them along axis ${x.axis}, not as input channels`);
    else this.consume(n, x, 0);
    const bias = bName || undefined;
    const seg = this.producerSpace(n, cout, 1, 0);
    this.assign(out, { axis: 1, size: cout, segments: [seg] });
    this.step(n, (v) => {
      const wt = v.input(n.index, 1)!;
      const bv = bias ? values(v.input(n.index, 2)!) : undefined;
      v.set(out, Float64Array.from({ length: cout }, (_, o) => (sliceIsZero(wt, 1, o) ? (bv?.[o] ?? 0) : NaN)));
    });
  }

  private gemm(n: Node, ins: (Layout | undefined)[]): void {
    const [aName, bName, cName] = n.inputs;
    const x = ins[0];
    const out = n.outputs[0]!;
    const b = this.constant(bName);
    for (const l of ins.slice(1)) this.denseAll(l, `${n.label} uses them as its weight or bias`);
    const transA = attrInt(n, 'transA', 0);
    const transB = attrInt(n, 'transB', 0);
    if (!b || !bName || b.shape.length !== 2 || this.constant(aName)) {
      const why = `${n.label} has no constant weight operand B`;
      this.denseAll(x, why);
      const seg = this.producerSpace(n, (this.dims(out)?.[1] as number) ?? 0, 0, undefined, why);
      this.assign(out, { axis: 1, size: this.spaces[seg.space]!.channels, segments: [seg] });
      return;
    }
    if (x && (transA || x.axis !== 1)) this.denseAll(x, `${n.label} reads them along its reduced axis only when transA = 0 and they are axis 1`);
    else this.consume(n, x, transB ? 1 : 0);
    const N = transB ? b.shape[0]! : b.shape[1]!;
    const c = this.constant(cName);
    const cLast = c && c.shape.length ? c.shape[c.shape.length - 1]! : 1;
    const cPerChannel = !!c && cLast === N && N > 1;
    let why: string | undefined;
    if (cName && !c) why = `${n.label} has a computed bias C`;
    else if (c && c.shape.length === 2 && c.shape[0] !== 1) why = `${n.label}'s bias C has a row per example`;
    const seg = this.producerSpace(n, N, transB ? 0 : 1, cPerChannel ? c!.shape.length - 1 : undefined, why);
    this.assign(out, { axis: 1, size: N, segments: [seg] });
    const beta = attrFloat(n, 'beta', 1);
    this.step(n, (v) => {
      const wt = v.input(n.index, 1)!;
      const ct = cName ? v.input(n.index, 2) : undefined;
      const cv = cName ? (ct ? constantPerPosition(ct, ct.shape.length - 1, N) : nan(N)) : undefined;
      v.set(out, Float64Array.from({ length: N }, (_, o) => (sliceIsZero(wt, transB ? 0 : 1, o) ? beta * (cv?.[o] ?? 0) : NaN)));
    });
  }

  private matmul(n: Node, ins: (Layout | undefined)[]): void {
    const [aName, bName] = n.inputs;
    const x = ins[0];
    const out = n.outputs[0]!;
    const a = this.constant(aName);
    const b = this.constant(bName);
    if (ins[1]) this.denseAll(ins[1], `${n.label} uses them as its right operand`);
    const rOut = this.rank(out);
    if (!b || a || !bName || b.shape.length !== 2) {
      if (x) this.denseAll(x, `${n.label} multiplies them by a computed matrix`);
      if (a && !b) {
        const seg = this.producerSpace(n, (this.dims(out)?.[rOut - 1] as number) ?? 0, 0, undefined, `${n.label} has its constant on the left`);
        this.assign(out, { axis: rOut - 1, size: this.spaces[seg.space]!.channels, segments: [seg] });
      }
      return;
    }
    if (x && x.axis !== this.rank(aName!) - 1) this.denseAll(x, `${n.label} reads them along axis ${x.axis}, not along its reduced (last) axis`);
    else this.consume(n, x, 0);
    const N = b.shape[1]!;
    const seg = this.producerSpace(n, N, 1, undefined);
    this.assign(out, { axis: rOut - 1, size: N, segments: [seg] });
    this.step(n, (v) => {
      const wt = v.input(n.index, 1)!;
      v.set(out, Float64Array.from({ length: N }, (_, o) => (sliceIsZero(wt, 1, o) ? 0 : NaN)));
    });
  }

  private norm(n: Node, ins: (Layout | undefined)[]): void {
    const x = ins[0];
    for (const l of ins.slice(1)) this.denseAll(l, `${n.label} uses them as normalization parameters`);
    if (!x) return;
    if (x.axis !== 1) return this.denseAll(x, `${n.label} normalizes axis 1, the channels are axis ${x.axis}`);
    const bn = n.opType === 'BatchNormalization';
    const roles: SliceRole[] = bn ? ['norm-scale', 'norm-bias', 'norm-mean', 'norm-var'] : ['norm-scale', 'norm-bias'];
    const params = n.inputs.slice(1, 1 + roles.length);
    const why = params.map((p) => {
      const t = this.constant(p);
      return this.notSliceable(p, 'normalization parameter', n) ?? (!t || t.shape.length !== 1 || t.shape[0] !== x.size ? `${n.label}: parameter '${p}' is not one value per channel` : undefined);
    }).find((w) => w);
    if (why) this.denseAll(x, why);
    else params.forEach((_, k) => x.segments.forEach((s) => this.slice(s, n, k + 1, roles[k]!, 0)));
    const out = n.outputs[0]!;
    this.assign(out, x);
    const eps = attrFloat(n, 'epsilon', 1e-5);
    this.step(n, (v) => {
      const a = v.get(n.inputs[0]!);
      if (!a) return;
      const [scale, shift, mean, variance] = params.map((_, k) => values(v.input(n.index, k + 1)!));
      v.set(out, a.map((val, p) => {
        if (scale![p] === 0) return shift![p]!;
        if (!bn) return Number.isNaN(val) ? NaN : shift![p]!; // a constant channel normalizes to its shift
        return (scale![p]! * (val - mean![p]!)) / Math.sqrt(variance![p]! + eps) + shift![p]!;
      }));
    });
  }

  private clip(n: Node, x: Layout): void {
    let lo = -Infinity;
    let hi = Infinity;
    if (this.g.opset < 11) {
      lo = attrFloat(n, 'min', lo);
      hi = attrFloat(n, 'max', hi);
    } else {
      for (const [slot, set] of [[1, (v: number) => (lo = v)], [2, (v: number) => (hi = v)]] as const) {
        const name = n.inputs[slot];
        if (!name) continue;
        const t = this.constant(name);
        if (!t || t.data.length !== 1) return this.passDense(n, x, `${n.label} has a computed bound '${name}'`);
        set(numberAt(t, 0));
      }
    }
    const out = n.outputs[0]!;
    this.assign(out, x);
    this.step(n, (v) => {
      const a = v.get(n.inputs[0]!);
      if (a) v.set(out, a.map((val) => (Number.isNaN(val) ? val : Math.min(hi, Math.max(lo, val)))));
    });
  }

  /** Add/Sub/Mul/Div/Pow/PRelu/Sum/Max/Min/Mean: channel-carrying operands are joined, constants sliced. */
  private elementwise(n: Node, ins: (Layout | undefined)[]): void {
    const out = n.outputs[0]!;
    const R = this.rank(out);
    const carried = ins.flatMap((l, i) => (l ? [i] : []));
    const first = ins[carried[0]!]!;
    const axisOf = (i: number): number => ins[i]!.axis + (R - this.rank(n.inputs[i]!));
    const axis = axisOf(carried[0]!);
    const all = (): Layout[] => carried.map((i) => ins[i]!);
    for (const i of carried.slice(1)) {
      if (!this.sameShape(first, ins[i]!, axis, axisOf(i))) {
        for (const l of all()) this.denseAll(l, `${n.label} joins channels laid out differently ('${n.inputs[carried[0]!]}' and '${n.inputs[i]}')`);
        return;
      }
    }
    // operands without prunable channels: a broadcast (size 1 on the channel axis) or a per-channel constant
    const constAxis = new Map<number, number>();
    for (const [i, name] of n.inputs.entries()) {
      if (ins[i] || !name) continue;
      const d = this.dims(name) ?? [];
      const k = axis - (R - d.length);
      constAxis.set(i, k);
      if (k < 0 || d[k] === 1) continue;
      if (d[k] !== first.size) {
        for (const l of all()) this.denseAll(l, `${n.label} broadcasts '${name}' of ${d[k]} channels against ${first.size}`);
        return;
      }
      if (!this.constant(name)) {
        for (const l of all()) this.denseAll(l, `${n.label} joins them with '${name}', whose channels cannot be pruned`);
        return;
      }
      const why = this.notSliceable(name, 'per-channel constant', n);
      if (why) {
        for (const l of all()) this.denseAll(l, why);
        return;
      }
    }
    // the constant added right after a MatMul producer is that producer's bias (the masked network zeroes it)
    const fromMatMul = this.producerOf.get(n.inputs[carried[0]!]!);
    const isBias = n.opType === 'Add' && carried.length === 1 && fromMatMul?.opType === 'MatMul' && this.refs.get(fromMatMul.outputs[0]!) === 1 && first.segments.length === 1;
    for (const [i, k] of constAxis) {
      const d = this.dims(n.inputs[i]!) ?? [];
      if (k >= 0 && d[k] !== 1) for (const s of first.segments) this.slice(s, n, i, isBias ? 'bias' : 'constant', k);
    }
    for (const i of carried.slice(1)) ins[i]!.segments.forEach((s, k) => this.union(first.segments[k]!.space, s.space));
    this.assign(out, { ...first, axis });
    const size = first.size;
    const combine = n.opType === 'Mean' ? BINARY.Sum! : BINARY[n.opType]!;
    this.step(n, (v) => {
      const operands = n.inputs.map((name, i) => {
        if (ins[i]) return v.get(name) ?? nan(size);
        const t = v.input(n.index, i);
        return t ? constantPerPosition(t, constAxis.get(i) ?? -1, size) : nan(size);
      });
      const r = operands.slice(1).reduce((acc, o) => acc.map((a, p) => combine(a, o[p]!)), operands[0]!);
      v.set(out, n.opType === 'Mean' ? r.map((a) => a / operands.length) : r);
    });
  }

  private pool(n: Node, x: Layout): void {
    if (x.axis !== 1) return this.denseAll(x, `${n.label} pools axis 1, the channels are axis ${x.axis}`);
    if (n.outputs[1] && (this.refs.get(n.outputs[1]) ?? 0) > 0) return this.passDense(n, x, `${n.label}'s Indices output mixes channel numbers`);
    const out = n.outputs[0]!;
    this.assign(out, x);
    const padded = (attrInts(n, 'pads') ?? []).some((p) => p !== 0) || !['NOTSET', 'VALID'].includes(attrString(n, 'auto_pad', 'NOTSET')) || attrInt(n, 'ceil_mode', 0) === 1;
    // a constant averaged with padding zeros (or an Lp norm over a window) stays constant only when it is 0
    const keepsConstant = n.opType === 'MaxPool' || n.opType === 'GlobalMaxPool' || n.opType === 'GlobalAveragePool' || (n.opType === 'AveragePool' && (!padded || attrInt(n, 'count_include_pad', 0) === 0));
    this.step(n, (v) => {
      const a = v.get(n.inputs[0]!);
      if (a) v.set(out, keepsConstant ? a : a.map((val) => (val === 0 ? 0 : NaN)));
    });
  }

  private pad(n: Node, x: Layout): void {
    const rank = this.rank(n.inputs[0]!);
    const pads = this.intsOf(n, 'pads', 1);
    if (!pads) return this.passDense(n, x, `${n.label} has computed pads`);
    const axesGiven = n.inputs[3] ? this.constant(n.inputs[3]) : undefined;
    const axes = axesGiven ? Array.from(values(axesGiven), (a) => (a < 0 ? a + rank : a)) : Array.from({ length: rank }, (_, i) => i);
    const k = axes.indexOf(x.axis);
    if (k >= 0 && (pads[k] !== 0 || pads[k + axes.length] !== 0)) return this.denseAll(x, `${n.label} pads the channel axis`);
    const mode = attrString(n, 'mode', 'constant');
    let fill = attrFloat(n, 'value', 0);
    if (this.g.opset >= 11 && n.inputs[2]) {
      const t = this.constant(n.inputs[2]);
      if (!t) return this.passDense(n, x, `${n.label} has a computed pad value`);
      fill = numberAt(t, 0);
    }
    const padsSomething = pads.some((p) => p !== 0);
    const out = n.outputs[0]!;
    this.assign(out, x);
    this.step(n, (v) => {
      const a = v.get(n.inputs[0]!);
      if (a) v.set(out, mode !== 'constant' || !padsSomething ? a : a.map((val) => (val === fill ? val : NaN)));
    });
  }

  /** Flatten and Reshape: channel c becomes a contiguous block of the output axis whose leading dims equal the input's. */
  private reshape(n: Node, x: Layout, ins: (Layout | undefined)[]): void {
    const out = n.outputs[0]!;
    if (ins[1]) return this.denseAll(ins[1], `${n.label} uses them as a shape`);
    const inDims = this.dims(n.inputs[0]!);
    const outDims = this.dims(out);
    if (!inDims || !outDims) return this.denseAll(x, `${n.label}: shapes were not traced`);
    const outer = inDims.slice(0, x.axis);
    const inner = inDims.slice(x.axis + 1);
    if (symCount(inner)) return this.denseAll(x, `${n.label}: the dimensions after the channels are not fixed`);
    let b = -1;
    let scale = 0;
    for (let k = 0; k < outDims.length; k++) {
      const before = outDims.slice(0, k);
      const after = outDims.slice(k + 1);
      if (symCount(before) !== symCount(outer) || prodNum(before) !== prodNum(outer) || symCount(after)) continue;
      const innerOut = prodNum(after);
      if (prodNum(inner) % innerOut === 0 && outDims[k] === (x.size * prodNum(inner)) / innerOut) {
        b = k;
        scale = prodNum(inner) / innerOut;
        break;
      }
    }
    if (b < 0) return this.denseAll(x, `${n.label} mixes the channels with other dimensions ([${inDims.join(',')}] to [${outDims.join(',')}])`);
    if (n.opType === 'Reshape') {
      const shapeName = n.inputs[1]!;
      const sym = this.g.symConsts.get(shapeName);
      const t = this.constant(shapeName) ?? sym?.base;
      if (!t) return this.denseAll(x, `${n.label} has a computed target shape`);
      const target = numberAt(t, b);
      if (target > 0 && !(sym && sym.batchAt.includes(b))) {
        // a target computed from the Shape of these very channels follows them (e.g. flatten(2)); a stored one is edited
        if (!this.readsShapeOf(shapeName, x)) {
          const why = this.notSliceable(shapeName, 'target shape', n);
          if (why) return this.denseAll(x, why);
          for (const s of x.segments) this.spaces[s.space]!.reshapes.push({ node: nodeName(n), index: n.index, tensor: shapeName, position: b, block: s.block * scale });
        }
      } else if (target === 0 && !(b === x.axis && scale === 1)) {
        return this.denseAll(x, `${n.label} copies dimension ${b} of its input (0 in its target shape)`);
      }
    }
    this.assign(out, { axis: b, size: x.size * scale, segments: x.segments.map((s) => ({ space: s.space, offset: s.offset * scale, block: s.block * scale })) });
    this.step(n, (v) => {
      const a = v.get(n.inputs[0]!);
      if (a) v.set(out, Float64Array.from({ length: x.size * scale }, (_, q) => a[Math.floor(q / scale)]!));
    });
  }

  /** Whether value `name` is computed from the Shape of a value carrying some of `x`'s channels. */
  private readsShapeOf(name: string, x: Layout): boolean {
    const spaces = new Set(x.segments.map((s) => this.find(s.space)));
    const seen = new Set<string>();
    const todo = [name];
    while (todo.length) {
      const v = todo.pop()!;
      if (seen.has(v)) continue;
      seen.add(v);
      const p = this.producerOf.get(v);
      if (!p) continue;
      if (p.opType === 'Shape') {
        if (this.layouts.get(p.inputs[0]!)?.segments.some((s) => spaces.has(this.find(s.space)))) return true;
      } else todo.push(...p.inputs.filter((i) => i));
    }
    return false;
  }

  private concat(n: Node, ins: (Layout | undefined)[]): void {
    const out = n.outputs[0]!;
    const r = this.rank(out);
    let axis = attrInt(n, 'axis', 0);
    if (axis < 0) axis += r;
    const carried = ins.filter((l): l is Layout => !!l);
    if (carried.some((l) => l.axis !== axis)) {
      for (const l of carried) this.denseAll(l, `${n.label} concatenates along axis ${axis}, not along the channels`);
      return;
    }
    const sizes = n.inputs.map((name) => this.dims(name)?.[axis]);
    if (sizes.some((s) => typeof s !== 'number')) {
      for (const l of carried) this.denseAll(l, `${n.label}: input sizes along the channel axis were not traced`);
      return;
    }
    const segments: Segment[] = [];
    const starts: number[] = [];
    let off = 0;
    n.inputs.forEach((_, i) => {
      starts.push(off);
      for (const s of ins[i]?.segments ?? []) segments.push({ space: s.space, offset: s.offset + off, block: s.block });
      off += sizes[i] as number;
    });
    this.assign(out, { axis, size: off, segments });
    this.step(n, (v) => {
      const res = nan(off);
      n.inputs.forEach((name, i) => {
        const a = ins[i] ? v.get(name) : undefined;
        if (a) res.set(a, starts[i]!);
      });
      v.set(out, res);
    });
  }

  private softmax(n: Node, x: Layout): void {
    const dims = this.dims(n.inputs[0]!) ?? [];
    const r = dims.length;
    let axis = attrInt(n, 'axis', this.g.opset >= 13 ? -1 : 1);
    if (axis < 0) axis += r;
    // before opset 13 the op works on the input coerced to 2-D: [dims before axis, dims from axis on]
    const reduced = this.g.opset >= 13 ? [axis] : dims.map((_, i) => i).filter((i) => i >= axis);
    if (reduced.includes(x.axis)) return this.denseAll(x, `${n.label} normalizes over the channel axis`);
    const count = prodNum(reduced.map((i) => dims[i]!));
    const out = n.outputs[0]!;
    this.assign(out, x);
    const f = n.opType === 'Softmax' ? () => 1 / count : n.opType === 'LogSoftmax' ? () => -Math.log(count) : () => NaN;
    this.step(n, (v) => {
      const a = v.get(n.inputs[0]!);
      if (a) v.set(out, a.map((val) => (Number.isNaN(val) ? val : f())));
    });
  }

  private reduce(n: Node, x: Layout): void {
    const dims = this.dims(n.inputs[0]!) ?? [];
    const r = dims.length;
    const axes = (this.intsOf(n, 'axes', 1) ?? []).map((a) => (a < 0 ? a + r : a));
    if (!axes.length && attrInt(n, 'noop_with_empty_axes', 0) === 0) return this.denseAll(x, `${n.label} reduces every axis, the channels too`);
    if (axes.includes(x.axis)) return this.denseAll(x, `${n.label} reduces the channel axis`);
    const keep = attrInt(n, 'keepdims', 1) === 1;
    const out = n.outputs[0]!;
    this.assign(out, { ...x, axis: keep ? x.axis : x.axis - axes.filter((a) => a < x.axis).length });
    const count = prodNum(axes.map((a) => dims[a]!));
    this.step(n, (v) => {
      const a = v.get(n.inputs[0]!);
      if (a) v.set(out, n.opType === 'ReduceSum' ? a.map((val) => val * count) : a);
    });
  }

  // ---- result -----------------------------------------------------------------------------------------

  private finish(): ChannelAnalysis {
    const members = new Map<number, number[]>();
    this.spaces.forEach((_, i) => {
      const r = this.find(i);
      members.set(r, [...(members.get(r) ?? []), i]);
    });
    const groups: ChannelGroup[] = [];
    const dense: DenseGroup[] = [];
    const groupOf = new Map<number, number>(); // root -> group id (-1: dense)
    for (const [root, ids] of members) {
      const sp = ids.map((i) => this.spaces[i]!);
      const channels = this.spaces[root]!.channels;
      const reasons = [...new Set(sp.flatMap((s) => s.reasons))];
      if (reasons.length || channels < 1) {
        groupOf.set(root, -1);
        dense.push({ producers: [...new Set(sp.map((s) => s.origin))], channels, reason: reasons.join('; ') || 'no channels' });
        continue;
      }
      const dedupe = <T>(xs: T[]): T[] => [...new Map(xs.map((v) => [JSON.stringify(v), v])).values()];
      groupOf.set(root, groups.length);
      groups.push({
        id: groups.length, channels,
        producers: dedupe(sp.flatMap((s) => s.producers)),
        slices: dedupe(sp.flatMap((s) => s.slices)),
        reshapes: dedupe(sp.flatMap((s) => s.reshapes)),
        depthwise: dedupe(sp.flatMap((s) => s.depthwise)),
        values: dedupe(sp.flatMap((s) => s.values)),
      });
    }
    const layouts = new Map<string, ChannelLayout>();
    for (const [name, l] of this.layouts) {
      layouts.set(name, { axis: l.axis, size: l.size, segments: l.segments.map((s) => ({ group: groupOf.get(this.find(s.space))!, offset: s.offset, block: s.block, channels: this.spaces[s.space]!.channels })) });
    }
    return { groups, dense, flow: { layouts, steps: this.steps, consumers: this.consumers, folded: this.g.consts } };
  }
}

/**
 * Per channel of a group, the L2 (or L1) norm of all its producers' weights (every producer's output-channel
 * rows, depthwise convolutions of the group included): LWM's and HYDRA's per-channel magnitude.
 */
export function channelNorms(group: ChannelGroup, weightOf: (p: ChannelProducer) => HostTensor | undefined, norm: 'l2' | 'l1' = 'l2'): Float64Array {
  const out = new Float64Array(group.channels);
  for (const p of group.producers) {
    const t = weightOf(p);
    if (!t) continue;
    const d = values(t);
    const dim = t.shape[p.axis]!;
    const inner = prodNum(t.shape.slice(p.axis + 1));
    const outer = prodNum(t.shape.slice(0, p.axis));
    for (let c = 0; c < group.channels; c++) {
      let s = 0;
      for (let j = 0; j < p.block; j++) {
        const row = p.offset + c * p.block + j;
        for (let o = 0; o < outer; o++) {
          for (let i = 0; i < inner; i++) {
            const w = d[(o * dim + row) * inner + i]!;
            s += norm === 'l2' ? w * w : Math.abs(w);
          }
        }
      }
      out[c] += s;
    }
  }
  return norm === 'l2' ? out.map(Math.sqrt) : out;
}

/** Indices of the `keep` largest scores (ties: lower index first), ascending. */
export function largestChannels(scores: ArrayLike<number>, keep: number): number[] {
  const idx = Array.from({ length: scores.length }, (_, i) => i);
  idx.sort((a, b) => scores[b]! - scores[a]! || a - b);
  return idx.slice(0, Math.max(0, Math.min(keep, scores.length))).sort((a, b) => a - b);
}
