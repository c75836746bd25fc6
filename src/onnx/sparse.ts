// ONNX sparse initializers (SparseTensorProto, COO with linear int64 indices): writing pruned weights
// sparsely, and reading them back as dense tensors.
import { cloneModel, type OnnxModel } from './model.js';
import type { TensorProto } from './proto.js';
import { decodeTensor, encodeTensor, hostTensor } from './tensor.js';
import { checkTensorSize } from './limits.js';
import { OnnxError } from '../util/errors.js';

/** A copy with the named initializers (any numeric type) moved into graph.sparse_initializer (COO, linear indices). */
export function toSparseInitializers(model: OnnxModel, names: string[]): OnnxModel {
  const out = cloneModel(model);
  const g = out.proto.graph!;
  const want = new Set(names);
  const keep: TensorProto[] = [];
  g.sparseInitializer = g.sparseInitializer ?? [];
  for (const t of g.initializer ?? []) {
    if (!want.has(t.name ?? '')) {
      keep.push(t);
      continue;
    }
    const h = decodeTensor(t);
    const d = h.data as ArrayLike<number>;
    const idx: bigint[] = [];
    const vals: number[] = [];
    for (let i = 0; i < d.length; i++) if (d[i] !== 0) (idx.push(BigInt(i)), vals.push(d[i]!));
    g.sparseInitializer.push({
      values: encodeTensor(t.name ?? '', hostTensor(h.dtype, [vals.length], vals)),
      indices: encodeTensor(`${t.name}/indices`, hostTensor('int64', [idx.length], idx)),
      dims: h.shape,
    });
  }
  g.initializer = keep;
  return out;
}

/** A copy with every sparse initializer as a dense one (the model itself when it has none). */
export function densifySparse(model: OnnxModel): OnnxModel {
  const sp = model.proto.graph?.sparseInitializer ?? [];
  if (!sp.length) return model;
  const out = cloneModel(model);
  const g = out.proto.graph!;
  for (const s of g.sparseInitializer ?? []) {
    const where = `sparse initializer '${s.values?.name ?? ''}'`;
    if (!s.values || !s.indices) throw new OnnxError(`${where}: values or indices missing`);
    const values = decodeTensor(s.values, { where: `${where} values` });
    const idx = decodeTensor(s.indices, { where: `${where} indices` });
    const dims = (s.dims ?? []).map(Number);
    const size = checkTensorSize(s.dims ?? [], where);
    const dense = new Float64Array(size);
    const nnz = values.shape[0] ?? 0;
    const rank = dims.length;
    if (values.shape.length !== 1) throw new OnnxError(`${where}: values must be 1-D, have shape [${values.shape}]`);
    if (idx.dtype !== 'int64') throw new OnnxError(`${where}: indices must be int64, are ${idx.dtype}`);
    const coords = idx.shape.length === 1 ? 1 : idx.shape[1];
    if (idx.shape[0] !== nnz || (idx.shape.length === 2 && coords !== rank) || idx.shape.length > 2) {
      throw new OnnxError(`${where}: indices of shape [${idx.shape}] do not fit ${nnz} values of a rank-${rank} tensor`);
    }
    const vd = values.data as ArrayLike<number>;
    const id = idx.data as BigInt64Array;
    for (let i = 0; i < nnz; i++) {
      let lin = 0;
      if (idx.shape.length === 1) lin = Number(id[i]);
      else {
        // [NNZ, rank] coordinates
        for (let r = 0; r < rank; r++) {
          const c = Number(id[i * rank + r]);
          if (!(c >= 0 && c < dims[r]!)) throw new OnnxError(`${where}: index ${c} on axis ${r} is outside [0, ${dims[r]})`);
          lin = lin * dims[r]! + c;
        }
      }
      if (!(lin >= 0 && lin < size)) throw new OnnxError(`${where}: index ${id[i]} is outside the ${size} elements of [${dims}]`);
      dense[lin] = vd[i]!;
    }
    g.initializer!.push(encodeTensor(s.values!.name ?? '', hostTensor(values.dtype, dims, Array.from(dense))));
  }
  g.sparseInitializer = [];
  return out;
}
