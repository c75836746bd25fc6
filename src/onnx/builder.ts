// Building ONNX graphs programmatically (forward and backward models for onnxruntime).
import { onnx, type AttributeProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto.js';
import { dtypeCode, encodeTensor, hostTensor, type DType, type HostTensor } from './tensor.js';

export type AttrIn = number | number[] | string | HostTensor | { floats: number[] } | { float: number };

export interface IOSpec { name: string; dtype: DType; shape: readonly (number | string)[] }

const AT = onnx.AttributeProto.AttributeType;

function encodeAttr(name: string, v: AttrIn): AttributeProto {
  if (typeof v === 'string') return { name, type: AT.STRING, s: Buffer.from(v) };
  if (typeof v === 'number') return Number.isInteger(v) ? { name, type: AT.INT, i: v } : { name, type: AT.FLOAT, f: v };
  if (Array.isArray(v)) return { name, type: AT.INTS, ints: v };
  if ('floats' in v) return { name, type: AT.FLOATS, floats: v.floats };
  if ('float' in v) return { name, type: AT.FLOAT, f: v.float };
  return { name, type: AT.TENSOR, t: encodeTensor('', v) };
}

export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly inputs: IOSpec[] = [];
  readonly outputs: IOSpec[] = [];
  private readonly used = new Set<string>();
  private counter = 0;
  private readonly constCache = new Map<string, string>();
  /** values of the int64 constants made by constI64, for rules that read an input the builder created */
  private readonly intValues = new Map<string, number[]>();
  /** static shapes an emitter declared (graph inputs' are read from `inputs`), for passes over the finished graph */
  private readonly shapes = new Map<string, number[]>();

  constructor(readonly opset: number, private readonly prefix = 'g') {}

  fresh(hint = 't'): string {
    let n: string;
    do n = `${this.prefix}/${hint}_${this.counter++}`; while (this.used.has(n));
    this.used.add(n);
    return n;
  }
  reserve(name: string): void {
    this.used.add(name);
  }

  /** Add a node; returns its output names (fresh unless given). */
  add(op: string, inputs: string[], attrs: Record<string, AttrIn | undefined> = {}, outputs: number | string[] = 1, domain = ''): string[] {
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(op)) : outputs;
    for (const o of outs) this.used.add(o);
    const attribute = Object.entries(attrs).filter(([, v]) => v !== undefined).map(([k, v]) => encodeAttr(k, v!));
    this.nodes.push({ opType: op, input: inputs, output: outs, attribute, name: this.fresh(`${op}_node`), ...(domain ? { domain } : {}) });
    return outs;
  }
  /** One node with one fresh output; `domain` for operators outside the default ONNX set. */
  op(op: string, inputs: string[], attrs: Record<string, AttrIn | undefined> = {}, domain = ''): string {
    return this.add(op, inputs, attrs, 1, domain)[0]!;
  }
  /** Copy a node verbatim (same op, attributes and names). */
  copy(n: NodeProto): void {
    for (const o of n.output ?? []) this.used.add(o);
    this.nodes.push({ ...n, input: [...(n.input ?? [])], output: [...(n.output ?? [])], attribute: n.attribute });
  }

  /** A copy to extend (inputs, initializers, nodes and declared shapes), its fresh names under `prefix`. */
  clone(prefix: string): GraphBuilder {
    const b = new GraphBuilder(this.opset, prefix);
    for (const i of this.inputs) b.input(i.name, i.dtype, i.shape);
    b.initializers.push(...this.initializers);
    for (const n of this.nodes) b.copy(n);
    for (const [k, v] of this.shapes) b.shapes.set(k, v);
    for (const [k, v] of this.intValues) b.intValues.set(k, v);
    return b;
  }

  init(name: string, t: HostTensor): string {
    this.used.add(name);
    this.initializers.push(encodeTensor(name, t));
    return name;
  }
  constF(values: number[] | Float32Array, shape: number[] = [values.length]): string {
    const key = `f:${shape}:${values.length <= 64 ? Array.from(values).join(',') : this.counter}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.init(this.fresh('cf'), hostTensor('float32', shape, Array.from(values)));
    this.constCache.set(key, name);
    return name;
  }
  /** Values of an int64 constant this builder made with constI64 (undefined for any other name). */
  intConst(name: string): number[] | undefined {
    return this.intValues.get(name);
  }
  scalarF(v: number): string {
    return this.constF([v], []);
  }
  constI64(values: number[], shape: number[] = [values.length]): string {
    const key = `i:${shape}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.init(this.fresh('ci'), hostTensor('int64', shape, values.map(BigInt)));
    this.constCache.set(key, name);
    this.intValues.set(name, values);
    return name;
  }

  /** Declare the static shape of a value (read back by passes that rewrite the finished graph). */
  setShape(name: string, shape: readonly number[]): void {
    this.shapes.set(name, [...shape]);
  }
  /** A value's static shape, if declared or a graph input with numeric dimensions. */
  knownShape(name: string): number[] | undefined {
    const s = this.shapes.get(name);
    if (s) return s;
    const i = this.inputs.find((x) => x.name === name);
    return i && i.shape.every((d) => typeof d === 'number') ? (i.shape as number[]) : undefined;
  }

  input(name: string, dtype: DType, shape: readonly (number | string)[]): string {
    this.used.add(name);
    this.inputs.push({ name, dtype, shape });
    return name;
  }
  output(name: string, dtype: DType = 'float32', shape: readonly (number | string)[] = []): void {
    this.outputs.push({ name, dtype, shape });
  }
  /** Replace the outputs by these names (types left to onnxruntime: use toModel({ untypedOutputs: true })). */
  setOutputs(names: Iterable<string>): void {
    this.outputs.length = 0;
    for (const n of new Set(names)) this.outputs.push({ name: n, dtype: 'float32', shape: [] });
  }

  // opset-aware forms of ops whose signature changed across versions
  reduce(op: 'ReduceSum' | 'ReduceMean' | 'ReduceMax' | 'ReduceL2', x: string, axes: number[], keepdims: boolean): string {
    const asInput = op === 'ReduceSum' ? this.opset >= 13 : this.opset >= 18;
    if (asInput) return this.op(op, [x, this.constI64(axes)], { keepdims: keepdims ? 1 : 0 });
    return this.op(op, [x], { axes, keepdims: keepdims ? 1 : 0 });
  }
  reshape(x: string, shape: number[]): string {
    return this.op('Reshape', [x, this.constI64(shape)]);
  }
  unsqueeze(x: string, axes: number[]): string {
    return this.opset >= 13 ? this.op('Unsqueeze', [x, this.constI64(axes)]) : this.op('Unsqueeze', [x], { axes });
  }
  split(x: string, sizes: number[], axis: number): string[] {
    if (this.opset >= 13) return this.add('Split', [x, this.constI64(sizes)], { axis }, sizes.length);
    return this.add('Split', [x], { axis, split: sizes }, sizes.length);
  }
  slice(x: string, starts: number[], ends: number[], axes: number[]): string {
    return this.op('Slice', [x, this.constI64(starts), this.constI64(ends), this.constI64(axes)]);
  }

  /** The model's bytes. `untypedOutputs`: outputs carry names only (onnxruntime infers their types). */
  toModel(opts: { untypedOutputs?: boolean } = {}): Uint8Array {
    const vi = (s: IOSpec): ValueInfoProto => ({
      name: s.name,
      type: { tensorType: { elemType: dtypeCode(s.dtype), shape: { dim: s.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
    });
    const out = (s: IOSpec): ValueInfoProto => (opts.untypedOutputs ? { name: s.name } : vi(s));
    const m = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'onnx-hydra',
      // operator sets of other domains (onnxruntime's com.microsoft.nchwc) at version 1
      opsetImport: [{ domain: '', version: this.opset }, ...[...new Set(this.nodes.map((n) => n.domain ?? '').filter((d) => d))].map((domain) => ({ domain, version: 1 }))],
      graph: { name: this.prefix, node: this.nodes, initializer: this.initializers, input: this.inputs.map(vi), output: this.outputs.map(out) },
    });
    return onnx.ModelProto.encode(m).finish();
  }
}
