// Masks for pruning: top-k by a score per layer or globally, the straight-through masked weight, sparsity.
import { tf } from '../tfjs/tf.js';
import { UserError } from '../util/errors.js';

export type Allocation = 'layer' | 'global';

/** Number of weights a layer of n keeps at sparsity `sparsity` (fraction removed): ⌈(1 − sparsity)·n⌉, at least 1. */
export function keepCount(n: number, sparsity: number): number {
  return Math.max(1, Math.min(n, Math.ceil((1 - sparsity) * n - 1e-9)));
}

/** 1 for the `keep` entries of largest |score| (ties broken by index), 0 elsewhere. */
export function topKMask(scores: Float32Array, keep: number): Float32Array {
  const n = scores.length;
  const mask = new Float32Array(n);
  if (keep >= n) return mask.fill(1);
  if (keep <= 0) return mask;
  // threshold from a native numeric sort of |s| (much faster than an index sort with a comparator)
  const a = Float32Array.from(scores, Math.abs);
  const sorted = a.slice().sort();
  const thr = sorted[n - keep]!;
  let count = 0;
  for (let i = 0; i < n; i++) if (a[i]! > thr) (mask[i] = 1), count++;
  for (let i = 0; i < n && count < keep; i++) if (a[i] === thr) (mask[i] = 1), count++;
  return mask;
}

/**
 * Masks for several layers: `layer` keeps ⌈(1−sparsity)·n⌉ per layer (HYDRA's choice); `global` keeps
 * the same total over all layers by one threshold on |score|.
 */
export function computeMasks(scores: Map<string, Float32Array>, sparsity: number, allocation: Allocation): Map<string, Float32Array> {
  if (!(sparsity > 0 && sparsity < 1)) throw new UserError(`--sparsity must be in (0, 1) (the fraction of weights removed), got ${sparsity}`);
  const out = new Map<string, Float32Array>();
  if (allocation === 'layer') {
    for (const [k, s] of scores) out.set(k, topKMask(s, keepCount(s.length, sparsity)));
    return out;
  }
  const total = [...scores.values()].reduce((p, s) => p + s.length, 0);
  const all = new Float32Array(total);
  let o = 0;
  for (const s of scores.values()) {
    all.set(s, o);
    o += s.length;
  }
  const m = topKMask(all, keepCount(total, sparsity));
  o = 0;
  for (const [k, s] of scores) {
    out.set(k, m.slice(o, o + s.length));
    o += s.length;
  }
  return out;
}

/**
 * HYDRA's straight-through subnet: forward w ⊙ topk(|s|), backward dL/ds = dL/d(w⊙m) ⊙ w ⊙ sign(s) (the
 * mask's gradient passed straight through to |s|, then through the absolute value, as in the reference
 * code's GetSubnet(scores.abs())). `w` is a constant here (frozen weights).
 */
const maskCache = new Map<string, { id: object; keep: number; mask: tf.Tensor }>();

export function maskedWeightSTE(w: tf.Tensor, s: tf.Variable, keep: number): tf.Tensor {
  // one mask per score tensor version (the attack and the loss of a step share it)
  const id = (s as unknown as { dataId: object }).dataId;
  let hit = maskCache.get(s.name);
  if (!hit || hit.id !== id || hit.keep !== keep) {
    hit?.mask.dispose();
    hit = { id, keep, mask: tf.keep(tf.tensor(topKMask(s.dataSync() as Float32Array, keep), s.shape)) };
    maskCache.set(s.name, hit);
  }
  const m = hit.mask;
  const f = tf.customGrad((sv: unknown) => {
    const st = sv as tf.Tensor;
    return { value: tf.mul(w, m), gradFunc: (dy: tf.Tensor) => [tf.mul(tf.mul(dy, w), tf.sign(st))] };
  });
  return f(s) as tf.Tensor;
}

/**
 * Channel HYDRA's straight-through mask: forward the 0/1 channel mask `hard` (top-k of |s| in the group),
 * backward dL/ds = dL/dm ⊙ sign(s). The mask multiplies every tensor slice of its channel (producer rows
 * and biases, BatchNorm scale and shift), so dL/dm sums dL/d(masked value) · value over all of them.
 */
export function channelMaskSTE(s: tf.Variable, hard: Float32Array): tf.Tensor {
  const f = tf.customGrad((sv: unknown) => {
    const st = sv as tf.Tensor;
    return { value: tf.tensor(hard, st.shape), gradFunc: (dy: tf.Tensor) => [tf.mul(dy, tf.sign(st))] };
  });
  return f(s) as tf.Tensor;
}

/**
 * Kept channels (1/0 per channel) of several groups from their scores: `layer` keeps
 * keepCount(channels, sparsity) of the largest |score| in every group; `global` ranks |score| divided by
 * the group's largest |score| over all groups with one threshold, and every group keeps at least its best
 * channel.
 */
export function allocateChannels(scores: readonly Float32Array[], sparsity: number, allocation: Allocation): Float32Array[] {
  if (!(sparsity > 0 && sparsity < 1)) throw new UserError(`--sparsity must be in (0, 1) (the fraction of channels removed), got ${sparsity}`);
  if (allocation === 'layer') return scores.map((s) => topKMask(s, keepCount(s.length, sparsity)));
  const normalized = scores.map((s) => {
    let max = 0;
    for (const v of s) max = Math.max(max, Math.abs(v));
    return Float32Array.from(s, (v) => (max > 0 ? Math.abs(v) / max : 1));
  });
  const m = computeMasks(new Map(normalized.map((s, i) => [String(i), s])), sparsity, 'global');
  return normalized.map((s, i) => {
    const kept = m.get(String(i))!;
    if (!kept.some((v) => v)) kept[s.indexOf(Math.max(...s))] = 1;
    return kept;
  });
}

/**
 * `make` (masked parameters computed from importance scores) once per version of the scores inside a
 * gradient tape: every forward pass of one training step (TRADES runs two on BatchNorm models) then gets
 * the same tensors, so the compiled engine bakes one session per step instead of one per pass (fresh
 * tensors are correct too: the engine keeps a replaced session until its tape is done). Outside a tape
 * (attacks, evaluation) every call makes new tensors.
 */
export function sharedWithinTape(scores: readonly tf.Variable[], make: () => Map<string, tf.Tensor>): () => Map<string, tf.Tensor> {
  let last: { ids: object[]; params: Map<string, tf.Tensor> } | undefined;
  return () => {
    if (!tf.engine().isTapeOn()) return make();
    const ids = scores.map((s) => (s as unknown as { dataId: object }).dataId);
    if (last && last.ids.every((id, i) => id === ids[i]) && [...last.params.values()].every((t) => !t.isDisposed)) return last.params;
    last = { ids, params: make() };
    return last.params;
  };
}

export interface LayerSparsity {
  name: string;
  node: string;
  params: number;
  zeros: number;
  sparsity: number;
}

export function sparsityOf(values: Map<string, Float32Array>, nodes: Map<string, string>): { layers: LayerSparsity[]; params: number; zeros: number; sparsity: number } {
  const layers: LayerSparsity[] = [];
  let params = 0;
  let zeros = 0;
  for (const [name, v] of values) {
    let z = 0;
    for (let i = 0; i < v.length; i++) if (v[i] === 0) z++;
    layers.push({ name, node: nodes.get(name) ?? '', params: v.length, zeros: z, sparsity: v.length ? z / v.length : 0 });
    params += v.length;
    zeros += z;
  }
  return { layers, params, zeros, sparsity: params ? zeros / params : 0 };
}
