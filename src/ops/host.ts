// Small-tensor arithmetic in plain JS, for shape chains (Shape→Gather→Concat→Reshape…) and constant folding.
// Exactness matters more than speed here: int64 stays bigint where the op allows it.
import { allocate, hostTensor, isFloat, numberAt, numel, type DType, type HostTensor } from '../onnx/tensor.js';
import { OnnxError } from '../util/errors.js';
import { checkOutputSize } from '../onnx/limits.js';

export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** numpy broadcasting of two shapes */
export function broadcastShapes(a: readonly number[], b: readonly number[], where = ''): number[] {
  const r = Math.max(a.length, b.length);
  const out = new Array<number>(r);
  for (let i = 0; i < r; i++) {
    const da = a[a.length - r + i] ?? 1;
    const db = b[b.length - r + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new OnnxError(`${where}shapes [${a}] and [${b}] cannot be broadcast`);
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** For each flat index of `out`, the flat index into a tensor of shape `inp` broadcast to it. */
export function broadcastIndex(inp: readonly number[], out: readonly number[]): Int32Array {
  const n = numel(out);
  const idx = new Int32Array(n);
  const r = out.length;
  const ist = strides(inp);
  const off = r - inp.length;
  const counter = new Array<number>(r).fill(0);
  for (let k = 0; k < n; k++) {
    let j = 0;
    for (let d = off; d < r; d++) if (inp[d - off] !== 1) j += counter[d]! * ist[d - off]!;
    idx[k] = j;
    for (let d = r - 1; d >= 0; d--) {
      if (++counter[d]! < out[d]!) break;
      counter[d] = 0;
    }
  }
  return idx;
}

function promote(a: DType, b: DType): DType {
  if (a === b) return a;
  if (isFloat(a) && !isFloat(b)) return a;
  if (isFloat(b) && !isFloat(a)) return b;
  if (a === 'int64' || b === 'int64') return 'int64';
  return a;
}

const isBig = (d: DType): boolean => d === 'int64' || d === 'uint64';

/** Elementwise binary op with broadcasting. int64 inputs use bigint arithmetic (exact). */
export function hostBinary(
  a: HostTensor, b: HostTensor,
  fnum: (x: number, y: number) => number | boolean,
  fbig: ((x: bigint, y: bigint) => bigint | boolean) | undefined,
  outDtype?: DType, where = '',
): HostTensor {
  const shape = broadcastShapes(a.shape, b.shape, where);
  checkOutputSize(shape, where.replace(/: $/, '') || 'an elementwise operation');
  const ia = broadcastIndex(a.shape, shape);
  const ib = broadcastIndex(b.shape, shape);
  const inDtype = promote(a.dtype, b.dtype);
  const dt = outDtype ?? inDtype;
  const n = ia.length;
  const out = allocate(dt, n);
  const big = isBig(inDtype) && fbig && isBig(a.dtype) && isBig(b.dtype);
  for (let k = 0; k < n; k++) {
    let v: number | bigint | boolean;
    if (big) v = fbig!(a.data[ia[k]!] as bigint, b.data[ib[k]!] as bigint);
    else v = fnum(numberAt(a, ia[k]!), numberAt(b, ib[k]!));
    if (out instanceof BigInt64Array || out instanceof BigUint64Array) out[k] = typeof v === 'bigint' ? v : BigInt(Math.trunc(Number(v)));
    else (out as Float64Array)[k] = Number(v);
  }
  return { dtype: dt, shape, data: out };
}

export function hostUnary(a: HostTensor, f: (x: number) => number, outDtype?: DType): HostTensor {
  const n = a.data.length;
  const dt = outDtype ?? a.dtype;
  const vals = new Array<number>(n);
  for (let i = 0; i < n; i++) vals[i] = f(numberAt(a, i));
  if (isBig(dt)) return hostTensor(dt, a.shape.slice(), vals.map((v) => BigInt(Math.trunc(v))));
  return hostTensor(dt, a.shape.slice(), vals);
}

/** Gather along `axis` with (possibly negative) indices. */
export function hostGather(x: HostTensor, indices: HostTensor, axis: number, where = ''): HostTensor {
  const dim = x.shape[axis]!;
  const outer = numel(x.shape.slice(0, axis));
  const inner = numel(x.shape.slice(axis + 1));
  const idx = Array.from({ length: indices.data.length }, (_, i) => {
    let v = numberAt(indices, i);
    if (v < 0) v += dim;
    if (v < 0 || v >= dim) throw new OnnxError(`${where}Gather index ${numberAt(indices, i)} is out of range for a dimension of ${dim}`);
    return v;
  });
  const shape = [...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)];
  const out = allocate(x.dtype, numel(shape));
  let k = 0;
  for (let o = 0; o < outer; o++) {
    for (const j of idx) {
      const base = (o * dim + j) * inner;
      for (let i = 0; i < inner; i++) (out as unknown as unknown[])[k++] = (x.data as unknown as unknown[])[base + i];
    }
  }
  return { dtype: x.dtype, shape, data: out };
}

export function hostReshape(x: HostTensor, shape: number[]): HostTensor {
  return { dtype: x.dtype, shape, data: x.data };
}

export function hostConcat(xs: HostTensor[], axis: number): HostTensor {
  const first = xs[0]!;
  const dtype = first.dtype;
  const shape = first.shape.slice();
  shape[axis] = xs.reduce((s, x) => s + x.shape[axis]!, 0);
  const outer = numel(shape.slice(0, axis));
  const out = allocate(dtype, numel(shape)) as unknown as unknown[];
  let k = 0;
  for (let o = 0; o < outer; o++) {
    for (const x of xs) {
      const chunk = x.shape[axis]! * numel(x.shape.slice(axis + 1));
      const src = x.data as unknown as unknown[];
      for (let i = 0; i < chunk; i++) {
        out[k++] = convertScalar(src[o * chunk + i], dtype);
      }
    }
  }
  return { dtype, shape, data: out as never };
}

function convertScalar(v: unknown, dtype: DType): unknown {
  if (dtype === 'string') return v;
  if (isBig(dtype)) return typeof v === 'bigint' ? v : BigInt(Math.trunc(Number(v)));
  return typeof v === 'bigint' ? Number(v) : v;
}

/** Cast with ONNX semantics: float→int truncates toward zero, anything→bool is (x != 0). */
export function hostCast(x: HostTensor, to: DType): HostTensor {
  if (x.dtype === to) return x;
  const n = x.data.length;
  const out = allocate(to, n);
  for (let i = 0; i < n; i++) {
    const v = x.data[i]!;
    if (to === 'string') (out as string[])[i] = String(v);
    else if (to === 'bool') (out as Uint8Array)[i] = typeof v === 'string' ? (Number(v) ? 1 : 0) : v ? 1 : 0;
    else if (isBig(to)) (out as BigInt64Array)[i] = typeof v === 'bigint' ? v : BigInt(Math.trunc(Number(v)));
    else if (isFloat(to)) (out as Float32Array)[i] = typeof v === 'bigint' ? Number(v) : Number(v);
    else (out as Int32Array)[i] = typeof v === 'bigint' ? Number(BigInt.asIntN(32, v)) : Math.trunc(Number(v));
  }
  return { dtype: to, shape: x.shape.slice(), data: out };
}

export function hostTranspose(x: HostTensor, perm: number[]): HostTensor {
  const shape = perm.map((p) => x.shape[p]!);
  const st = strides(x.shape);
  const n = numel(shape);
  const out = allocate(x.dtype, n) as unknown as unknown[];
  const src = x.data as unknown as unknown[];
  const counter = new Array<number>(shape.length).fill(0);
  for (let k = 0; k < n; k++) {
    let j = 0;
    for (let d = 0; d < shape.length; d++) j += counter[d]! * st[perm[d]!]!;
    out[k] = src[j];
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++counter[d]! < shape[d]!) break;
      counter[d] = 0;
    }
  }
  return { dtype: x.dtype, shape, data: out as never };
}

/** Take elements along `axis` at the given positions (used for Slice with any step). */
export function hostTake(x: HostTensor, axis: number, positions: number[]): HostTensor {
  const idx = hostTensor('int64', [positions.length], positions);
  return hostGather(x, idx, axis);
}

export function scalarHost(dtype: DType, v: number): HostTensor {
  return hostTensor(dtype, [], [isBig(dtype) ? BigInt(Math.trunc(v)) : v] as never);
}
