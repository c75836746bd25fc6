// Host-side tensors: ONNX TensorProto <-> typed arrays, all data types ONNX classifiers use.
import fs from 'node:fs';
import path from 'node:path';
import { DataType, onnx, toBigInt, type TensorProto } from './proto.js';
import { checkTensorSize } from './limits.js';
import { OnnxError } from '../util/errors.js';

export type DType =
  | 'float32' | 'float64' | 'float16' | 'bfloat16'
  | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64'
  | 'bool' | 'string';

export type HostData =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array | string[];

/**
 * A tensor held in JS memory. float16/bfloat16 values are held widened in a Float32Array; `dtype` keeps the
 * ONNX type so they are narrowed again when written. int64/uint64 use BigInt arrays, so nothing is rounded.
 */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: HostData;
}

const CODE_TO_DTYPE: Record<number, DType> = {
  [DataType.FLOAT]: 'float32', [DataType.UINT8]: 'uint8', [DataType.INT8]: 'int8', [DataType.UINT16]: 'uint16',
  [DataType.INT16]: 'int16', [DataType.INT32]: 'int32', [DataType.INT64]: 'int64', [DataType.STRING]: 'string',
  [DataType.BOOL]: 'bool', [DataType.FLOAT16]: 'float16', [DataType.DOUBLE]: 'float64', [DataType.UINT32]: 'uint32',
  [DataType.UINT64]: 'uint64', [DataType.BFLOAT16]: 'bfloat16',
};
const DTYPE_TO_CODE: Record<DType, number> = Object.fromEntries(
  Object.entries(CODE_TO_DTYPE).map(([k, v]) => [v, Number(k)]),
) as Record<DType, number>;

export function dtypeFromCode(code: number, where: string): DType {
  const d = CODE_TO_DTYPE[code];
  if (!d) {
    const name = Object.entries(DataType).find(([, v]) => v === code)?.[0] ?? `code ${code}`;
    throw new OnnxError(`${where}: tensor element type ${name} is not supported`);
  }
  return d;
}
export function dtypeCode(d: DType): number {
  return DTYPE_TO_CODE[d];
}

/** Bytes per element in raw_data (undefined for strings). */
const BYTES_PER: Record<DType, number | undefined> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int8: 1, uint8: 1, bool: 1, int16: 2, uint16: 2,
  int32: 4, uint32: 4, int64: 8, uint64: 8, string: undefined,
};

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function isFloat(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';
}

export function allocate(dtype: DType, n: number): HostData {
  switch (dtype) {
    case 'float32': case 'float16': case 'bfloat16': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'int8': return new Int8Array(n);
    case 'uint8': case 'bool': return new Uint8Array(n);
    case 'int16': return new Int16Array(n);
    case 'uint16': return new Uint16Array(n);
    case 'int32': return new Int32Array(n);
    case 'uint32': return new Uint32Array(n);
    case 'int64': return new BigInt64Array(n);
    case 'uint64': return new BigUint64Array(n);
    case 'string': return new Array<string>(n).fill('');
  }
}

export function hostTensor(dtype: DType, shape: number[], values?: ArrayLike<number | bigint> | HostData): HostTensor {
  const n = numel(shape);
  const data = allocate(dtype, n);
  if (values) {
    if (values.length !== n) throw new OnnxError(`tensor of shape [${shape}] needs ${n} values, got ${values.length}`);
    if (data instanceof BigInt64Array || data instanceof BigUint64Array) {
      for (let i = 0; i < n; i++) data[i] = BigInt((values as ArrayLike<number | bigint>)[i] as number | bigint);
    } else if (Array.isArray(data)) {
      for (let i = 0; i < n; i++) data[i] = String(values[i]);
    } else {
      for (let i = 0; i < n; i++) data[i] = Number(values[i]);
    }
  }
  return { dtype, shape, data };
}

/** Element i as a JS number (int64 beyond 2^53 is clamped, as index arithmetic needs). */
export function numberAt(t: HostTensor, i: number): number {
  const v = t.data[i]!;
  if (typeof v === 'bigint') {
    const max = BigInt(Number.MAX_SAFE_INTEGER);
    return v > max ? Number.MAX_SAFE_INTEGER : v < -max ? -Number.MAX_SAFE_INTEGER : Number(v);
  }
  if (typeof v === 'string') return Number(v);
  return v;
}
export function toNumbers(t: HostTensor): number[] {
  const out = new Array<number>(t.data.length);
  for (let i = 0; i < out.length; i++) out[i] = numberAt(t, i);
  return out;
}

// IEEE half precision <-> single. Hand-written: 20 lines of bit arithmetic, not worth a dependency.
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = sign | (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return half;
}
export function bf16ToFloat(b: number): number {
  u32[0] = b << 16;
  return f32[0]!;
}
export function floatToBf16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  if (Number.isNaN(v)) return 0x7fc0;
  return (x + 0x7fff + ((x >> 16) & 1)) >>> 16; // round to nearest even
}

export interface DecodeOptions {
  /** folder that external-data locations are relative to (the model file's folder) */
  baseDir?: string;
  /** used in error messages */
  where?: string;
}

function readExternal(t: TensorProto, opts: DecodeOptions, where: string, expectBytes?: number): Uint8Array {
  const kv = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const loc = kv.get('location');
  if (!loc) throw new OnnxError(`${where}: external data without a 'location'`);
  if (!opts.baseDir) throw new OnnxError(`${where}: tensor data is in external file '${loc}', but the model was loaded from a buffer; load it from its file`);
  const file = path.resolve(opts.baseDir, loc);
  if (path.relative(opts.baseDir, file).startsWith('..')) throw new OnnxError(`${where}: external data location '${loc}' points outside the model's folder`);
  if (!fs.existsSync(file)) throw new OnnxError(`${where}: external data file '${file}' not found`);
  const size = fs.statSync(file).size;
  const num = (k: string, def: number): number => {
    if (!kv.has(k)) return def;
    const v = Number(kv.get(k));
    if (!Number.isSafeInteger(v) || v < 0) throw new OnnxError(`${where}: external data ${k} '${kv.get(k)}' is not a non-negative integer`);
    return v;
  };
  const offset = num('offset', 0);
  const length = num('length', Math.max(0, size - offset));
  if (offset + length > size) throw new OnnxError(`${where}: external data file '${loc}' has ${size} bytes, shorter than offset ${offset} + length ${length}`);
  if (expectBytes !== undefined && length !== expectBytes) throw new OnnxError(`${where}: external data has ${length} bytes, its shape needs ${expectBytes}`);
  const buf = Buffer.alloc(length);
  const fd = fs.openSync(file, 'r');
  try {
    const got = fs.readSync(fd, buf, 0, length, offset);
    if (got !== length) throw new OnnxError(`${where}: external data file '${loc}' is shorter than offset ${offset} + length ${length}`);
  } finally {
    fs.closeSync(fd);
  }
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Decode a TensorProto (raw_data, typed fields or external data) into a HostTensor. */
export function decodeTensor(t: TensorProto, opts: DecodeOptions = {}): HostTensor {
  const where = opts.where ?? `tensor '${t.name ?? ''}'`;
  const dtype = dtypeFromCode(t.dataType ?? 0, where);
  const dims = (t.dims ?? []).map((d) => toBigInt(d));
  // every declared size is checked against the limits and the data present before anything is allocated
  const n = checkTensorSize(dims, where);
  const shape = dims.map(Number);
  if (t.segment) throw new OnnxError(`${where}: segmented tensors are not supported`);
  const bytesPer = BYTES_PER[dtype];
  let raw: Uint8Array | undefined;
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) raw = readExternal(t, opts, where, bytesPer ? n * bytesPer : undefined);
  else if (t.rawData && t.rawData.length > 0) raw = t.rawData;
  if (raw) {
    if (dtype === 'string') throw new OnnxError(`${where}: string tensors cannot use raw_data`);
    const want = n * bytesPer!;
    if (raw.byteLength !== want) throw new OnnxError(`${where}: raw data has ${raw.byteLength} bytes, shape [${shape}] of ${dtype} needs ${want}`);
    const out = allocate(dtype, n);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < n; i++) {
      switch (dtype) {
        case 'float32': (out as Float32Array)[i] = dv.getFloat32(i * 4, true); break;
        case 'float64': (out as Float64Array)[i] = dv.getFloat64(i * 8, true); break;
        case 'float16': (out as Float32Array)[i] = halfToFloat(dv.getUint16(i * 2, true)); break;
        case 'bfloat16': (out as Float32Array)[i] = bf16ToFloat(dv.getUint16(i * 2, true)); break;
        case 'int8': (out as Int8Array)[i] = dv.getInt8(i); break;
        case 'uint8': case 'bool': (out as Uint8Array)[i] = dv.getUint8(i); break;
        case 'int16': (out as Int16Array)[i] = dv.getInt16(i * 2, true); break;
        case 'uint16': (out as Uint16Array)[i] = dv.getUint16(i * 2, true); break;
        case 'int32': (out as Int32Array)[i] = dv.getInt32(i * 4, true); break;
        case 'uint32': (out as Uint32Array)[i] = dv.getUint32(i * 4, true); break;
        case 'int64': (out as BigInt64Array)[i] = dv.getBigInt64(i * 8, true); break;
        case 'uint64': (out as BigUint64Array)[i] = dv.getBigUint64(i * 8, true); break;
      }
    }
    return { dtype, shape, data: out };
  }
  // typed fields, as the ONNX spec assigns them per data type
  let src: ArrayLike<unknown> = [];
  switch (dtype) {
    case 'float32': src = t.floatData ?? []; break;
    case 'float64': src = t.doubleData ?? []; break;
    case 'int64': src = t.int64Data ?? []; break;
    case 'uint32': case 'uint64': src = t.uint64Data ?? []; break;
    case 'string': src = t.stringData ?? []; break;
    default: src = t.int32Data ?? []; break;
  }
  if (src.length !== n) throw new OnnxError(`${where}: has ${src.length} values, shape [${shape}] needs ${n}`);
  const out = allocate(dtype, n);
  for (let i = 0; i < n; i++) {
    const v = src[i];
    switch (dtype) {
      case 'int64': (out as BigInt64Array)[i] = toBigInt(v as number); break;
      case 'uint64': (out as BigUint64Array)[i] = BigInt.asUintN(64, toBigInt(v as number)); break;
      case 'uint32': (out as Uint32Array)[i] = Number(toBigInt(v as number)); break;
      case 'float16': (out as Float32Array)[i] = halfToFloat(v as number); break;
      case 'bfloat16': (out as Float32Array)[i] = bf16ToFloat(v as number); break;
      case 'string': (out as string[])[i] = Buffer.from(v as Uint8Array).toString('utf8'); break;
      default: (out as Float32Array)[i] = v as number;
    }
  }
  return { dtype, shape, data: out };
}

/** Encode a HostTensor as a TensorProto with raw_data (strings use string_data). */
export function encodeTensor(name: string, t: HostTensor): TensorProto {
  const n = numel(t.shape);
  const proto: TensorProto = { name, dataType: dtypeCode(t.dtype), dims: t.shape.slice() };
  if (t.dtype === 'string') {
    proto.stringData = (t.data as string[]).map((s) => Buffer.from(s, 'utf8'));
    return proto;
  }
  proto.rawData = encodeRaw(t, n);
  return proto;
}

export function encodeRaw(t: HostTensor, n = numel(t.shape)): Uint8Array {
  const d = t.data;
  if (t.dtype === 'float16' || t.dtype === 'bfloat16') {
    const u = new Uint16Array(n);
    const conv = t.dtype === 'float16' ? floatToHalf : floatToBf16;
    for (let i = 0; i < n; i++) u[i] = conv((d as Float32Array)[i]!);
    return littleEndianBytes(u);
  }
  if (Array.isArray(d)) throw new OnnxError('string tensors have no raw encoding');
  return littleEndianBytes(d);
}

function littleEndianBytes(a: Exclude<HostData, string[]>): Uint8Array {
  // x86/ARM Node is little-endian, as ONNX raw_data is; copy so the proto owns its bytes
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

/** Replace a TensorProto's content in place with float32 values (keeps name, dtype, dims, doc string). */
export function overwriteTensorData(t: TensorProto, values: Float32Array): void {
  const dtype = dtypeFromCode(t.dataType ?? 0, `tensor '${t.name}'`);
  const shape = (t.dims ?? []).map((d) => Number(toBigInt(d)));
  if (numel(shape) !== values.length) throw new OnnxError(`tensor '${t.name}': ${values.length} values for shape [${shape}]`);
  const host: HostTensor = { dtype, shape, data: allocate(dtype, values.length) };
  if (isFloat(dtype)) (host.data as Float32Array | Float64Array).set(values);
  else throw new OnnxError(`tensor '${t.name}': only float tensors can be overwritten (it is ${dtype})`);
  t.rawData = encodeRaw(host);
  t.floatData = [];
  t.doubleData = [];
  t.int32Data = [];
  t.externalData = [];
  t.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
}
