// Runtime values of the converted graph: tfjs tensors for data, host tensors for shapes and small constants.
import { tf } from '../tfjs/tf.js';
import { allocate, isFloat, numberAt, numel, type DType, type HostTensor } from '../onnx/tensor.js';
import { Attrs, type Node } from './ir.js';
import { OnnxError, UnsupportedOpsError } from '../util/errors.js';
import { checkOutputSize } from '../onnx/limits.js';

export type Val = tf.Tensor | HostTensor;

export function isHost(v: Val): v is HostTensor {
  return !(v instanceof tf.Tensor);
}

export function tfDtypeOf(d: DType): 'float32' | 'int32' | 'bool' | 'string' {
  if (isFloat(d)) return 'float32';
  if (d === 'bool') return 'bool';
  if (d === 'string') return 'string';
  return 'int32';
}

/** Host tensor -> tfjs tensor (floats become float32, integers int32, bool stays bool). */
export function hostToTf(h: HostTensor): tf.Tensor {
  const td = tfDtypeOf(h.dtype);
  if (td === 'string') return tf.tensor(h.data as string[], h.shape, 'string');
  if (td === 'float32') {
    const d = h.data instanceof Float32Array ? h.data : Float32Array.from(h.data as ArrayLike<number>);
    return tf.tensor(d, h.shape, 'float32');
  }
  const n = h.data.length;
  if (td === 'bool') return tf.tensor(Uint8Array.from(h.data as Uint8Array), h.shape, 'bool');
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = numberAt(h, i);
    out[i] = v > 2147483647 ? 2147483647 : v < -2147483648 ? -2147483648 : v;
  }
  return tf.tensor(out, h.shape, 'int32');
}

/** tfjs tensor -> host tensor (reads the data synchronously). */
export function tfToHost(t: tf.Tensor, dtype?: DType): HostTensor {
  const d = t.dataSync();
  const dt: DType = dtype ?? (t.dtype === 'float32' ? 'float32' : t.dtype === 'bool' ? 'bool' : t.dtype === 'int32' ? 'int32' : 'float32');
  const data = allocate(dt, d.length);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) for (let i = 0; i < d.length; i++) data[i] = BigInt(d[i] as number);
  else (data as Float32Array).set(d as Float32Array);
  return { dtype: dt, shape: t.shape.slice(), data };
}

export function shapeOf(v: Val): number[] {
  return isHost(v) ? v.shape : v.shape;
}

export interface RunEnv {
  opset: number;
  training: boolean;
  /** tf tensor of a constant, created once and kept by the graph */
  constTensor(h: HostTensor): tf.Tensor | undefined;
  /** running-statistics updates produced in training mode (applied by the trainer after the step) */
  updates: Map<string, tf.Tensor>;
  /** elements one example's activation may hold (see onnx/limits) */
  sampleLimit?: number;
}

/** What an op implementation sees: its node, attributes and inputs, with conversions. */
export class OpCtx {
  readonly a: Attrs;
  constructor(readonly node: Node, private readonly vals: (Val | undefined)[], readonly env: RunEnv) {
    this.a = new Attrs(node);
  }
  get opset(): number {
    return this.env.opset;
  }
  get training(): boolean {
    return this.env.training;
  }
  /** number of inputs given (trailing omitted optional inputs excluded) */
  get n(): number {
    return this.node.inputs.length;
  }
  has(i: number): boolean {
    return i < this.node.inputs.length && this.node.inputs[i] !== '';
  }
  val(i: number): Val {
    const v = this.has(i) ? this.vals[i] : undefined;
    if (!v) throw new OnnxError(`${this.node.label}: input ${i} is required`);
    return v;
  }
  isHost(i: number): boolean {
    return isHost(this.val(i));
  }
  allHost(): boolean {
    for (let i = 0; i < this.n; i++) if (this.has(i) && !this.isHost(i)) return false;
    return true;
  }
  t(i: number): tf.Tensor {
    const v = this.val(i);
    if (!isHost(v)) return v;
    return this.env.constTensor(v) ?? hostToTf(v);
  }
  /** input as float32 tf tensor */
  f(i: number): tf.Tensor {
    const t = this.t(i);
    return t.dtype === 'float32' ? t : tf.cast(t, 'float32');
  }
  h(i: number): HostTensor {
    const v = this.val(i);
    return isHost(v) ? v : tfToHost(v);
  }
  shape(i: number): number[] {
    return shapeOf(this.val(i));
  }
  rank(i: number): number {
    return this.shape(i).length;
  }
  /** an integer input (shape, axes, pads...) as numbers */
  ints(i: number): number[] {
    const h = this.h(i);
    const out: number[] = [];
    for (let k = 0; k < h.data.length; k++) out.push(numberAt(h, k));
    return out;
  }
  /** a scalar input as a number */
  scalar(i: number): number {
    const h = this.h(i);
    if (numel(h.shape) !== 1) throw new OnnxError(`${this.node.label}: input ${i} should be a scalar, has shape [${h.shape}]`);
    return numberAt(h, 0);
  }
  /** this node uses a feature the converter does not implement (reported like an unsupported op) */
  unsupported(reason: string): never {
    const n = this.node;
    throw new UnsupportedOpsError([{ opType: n.opType, domain: n.domain, node: n.name || `#${n.index}`, reason }]);
  }
  /** Throws naming this node when an output of `shape` would be absurdly large (checked before computing it). */
  checkOutput(shape: readonly number[]): void {
    checkOutputSize(shape, this.node.label, this.env.sampleLimit);
  }
  fail(msg: string): never {
    throw new OnnxError(`${this.node.label}: ${msg}`);
  }
  axis(axis: number, rank: number): number {
    const a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= rank) this.fail(`axis ${axis} is out of range for rank ${rank}`);
    return a;
  }
}
