// ONNX sparse initializers (SparseTensorProto, COO with linear int64 indices): writing pruned weights
// sparsely, and reading them back as dense tensors.
import { cloneModel, type OnnxModel } from './model.js';
import type { TensorProto } from './proto.js';
import { decodeTensor, encodeTensor, hostTensor } from './tensor.js';
import { createSession } from '../runtime/ort.js';

/** Move the named initializers (any numeric type) into graph.sparse_initializer; keeps dense when onnxruntime-node rejects it. */
export async function toSparseInitializers(model: OnnxModel, names: string[]): Promise<{ ok: true; model: OnnxModel } | { ok: false; why: string }> {
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
  try {
    const s = await createSession(out);
    await s.session.release();
  } catch (e) {
    return { ok: false, why: (e as Error).message.split('\n')[0]! };
  }
  return { ok: true, model: out };
}

/** A copy with every sparse initializer as a dense one (the model itself when it has none). */
export function densifySparse(model: OnnxModel): OnnxModel {
  const sp = model.proto.graph?.sparseInitializer ?? [];
  if (!sp.length) return model;
  const out = cloneModel(model);
  const g = out.proto.graph!;
  for (const s of g.sparseInitializer ?? []) {
    const values = decodeTensor(s.values!);
    const idx = decodeTensor(s.indices!);
    const dims = (s.dims ?? []).map(Number);
    const dense = new Float64Array(dims.reduce((a, b) => a * b, 1));
    const nnz = values.shape[0] ?? 0;
    const vd = values.data as ArrayLike<number>;
    if (idx.shape.length === 1) for (let i = 0; i < nnz; i++) dense[Number((idx.data as BigInt64Array)[i])] = vd[i]!;
    else {
      // [NNZ, rank] coordinates
      const rank = dims.length;
      for (let i = 0; i < nnz; i++) {
        let lin = 0;
        for (let r = 0; r < rank; r++) lin = lin * dims[r]! + Number((idx.data as BigInt64Array)[i * rank + r]);
        dense[lin] = vd[i]!;
      }
    }
    g.initializer!.push(encodeTensor(s.values!.name ?? '', hostTensor(values.dtype, dims, Array.from(dense))));
  }
  g.sparseInitializer = [];
  return out;
}
