// APGD's difference-of-logits-ratio loss (DLR; Croce & Hein, ICML 2020), untargeted and targeted, in the two
// places it is computed: per row in JS (the reference, used by the tfjs fallback) and as ONNX nodes in the
// compiled engine's fused attack model, where loss, logit gradient and backpropagation take one onnxruntime
// call. Both order the classes by decreasing logit and break ties by the lower class index (ONNX TopK's
// rule), so both pick the same classes, also on ties, and agree up to float32 rounding.
import type { GraphBuilder } from '../onnx/builder.js';

/** Indices of the `m` largest entries of row z[off .. off+k), largest first; ties: the lower index first. */
function topIndices(z: ArrayLike<number>, off: number, k: number, m: number): number[] {
  const top: number[] = [];
  for (let j = 0; j < k; j++) {
    const v = z[off + j]!;
    let pos = top.length;
    while (pos > 0 && z[off + top[pos - 1]!]! < v) pos--;
    if (pos < m) {
      top.splice(pos, 0, j);
      if (top.length > m) top.pop();
    }
  }
  return top;
}

/**
 * DLR loss of one row of logits, −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3) (π: classes by decreasing logit;
 * 1e-12 added to the denominator as in the reference code), and when `dz` is given its gradient with
 * respect to the logits, written to dz[dzOff .. dzOff+k). Needs k ≥ 3.
 */
export function dlrLoss(z: ArrayLike<number>, off: number, k: number, y: number, dz?: Float32Array | Float64Array, dzOff = 0): number {
  const [p1, p2, p3] = topIndices(z, off, k, 3) as [number, number, number];
  const other = p1 === y ? p2 : p1;
  const num = z[off + y]! - z[off + other]!;
  const den = z[off + p1]! - z[off + p3]! + 1e-12;
  if (dz) {
    dz.fill(0, dzOff, dzOff + k);
    dz[dzOff + y]! -= 1 / den;
    dz[dzOff + other]! += 1 / den;
    dz[dzOff + p1]! += num / (den * den);
    dz[dzOff + p3]! -= num / (den * den);
  }
  return -num / den;
}

/**
 * Targeted DLR loss of one row, −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), and its gradient with respect to
 * the logits when `dz` is given. Needs k ≥ 4.
 */
export function targetedDlrLoss(z: ArrayLike<number>, off: number, k: number, y: number, t: number, dz?: Float32Array | Float64Array, dzOff = 0): number {
  const [p1, , p3, p4] = topIndices(z, off, k, 4) as [number, number, number, number];
  const num = z[off + y]! - z[off + t]!;
  const den = z[off + p1]! - 0.5 * (z[off + p3]! + z[off + p4]!) + 1e-12;
  if (dz) {
    dz.fill(0, dzOff, dzOff + k);
    dz[dzOff + y]! -= 1 / den;
    dz[dzOff + t]! += 1 / den;
    dz[dzOff + p1]! += num / (den * den);
    dz[dzOff + p3]! -= num / (2 * den * den);
    dz[dzOff + p4]! -= num / (2 * den * den);
  }
  return -num / den;
}

/**
 * The DLR loss of n rows of logits [n, k] (targeted when `targets` is given), per row, with its gradient with
 * respect to the logits written to dz [n, k].
 */
export function dlrRows(z: Float32Array, n: number, k: number, labels: Int32Array, targets: Int32Array | undefined, dz: Float32Array): Float32Array {
  const loss = new Float32Array(n);
  for (let r = 0; r < n; r++) {
    loss[r] = targets ? targetedDlrLoss(z, r * k, k, labels[r]!, targets[r]!, dz, r * k) : dlrLoss(z, r * k, k, labels[r]!, dz, r * k);
  }
  return loss;
}

/** ONNX TensorProto element types, for Cast */
const INT64 = 7;
const FLOAT = 1;

/**
 * Appends to `b` the DLR loss of every row of `logits` [batch, classes] (targeted when the name of a
 * `targets` input is given) and its gradient with respect to the logits. `labels` and `targets` are int32
 * [batch]. Both variants are N/D with N = z_y − z_o (o: the target, or the most likely class other than y)
 * and D = Σ_j c_j·z_πj + 1e-12 over the top classes π (c = 1, 0, −1 or 1, 0, −½, −½), so that
 * ∂(−N/D)/∂z = ((N/D)·∂D/∂z − ∂N/∂z)/D, the ∂/∂z being one-hot rows (summed where classes coincide, as
 * the JS reference's += do). Returns the names of the loss [batch] and of dz [batch, classes].
 */
export function emitDlr(b: GraphBuilder, logits: string, batch: number, classes: number, labels: string, targets?: string): { loss: string; dz: string } {
  const coef = targets ? [1, 0, -0.5, -0.5] : [1, 0, -1];
  const m = coef.length;
  if (classes < m) throw new Error(`the ${targets ? 'targeted ' : ''}DLR loss needs at least ${m} classes, the model has ${classes}`);
  const [topValues, topClasses] = b.add('TopK', [logits, b.constI64([m])], { axis: -1, largest: 1, sorted: 1 }, 2) as [string, string];
  const column = (ids: string): string => b.unsqueeze(b.op('Cast', [ids], { to: INT64 }), [1]); // int32 [batch] → int64 [batch, 1]
  const y = column(labels);
  let opponent: string;
  if (targets) opponent = column(targets);
  else {
    const first = b.slice(topClasses, [0], [1], [1]);
    opponent = b.op('Where', [b.op('Equal', [first, y]), b.slice(topClasses, [1], [2], [1]), first]);
  }
  const num = b.op('Sub', [b.op('GatherElements', [logits, y], { axis: 1 }), b.op('GatherElements', [logits, opponent], { axis: 1 })]);
  const den = b.op('Add', [b.reduce('ReduceSum', b.op('Mul', [topValues, b.constF(coef, [1, m])]), [1], true), b.scalarF(1e-12)]);
  const ratio = b.op('Div', [num, den]); // [batch, 1]
  const loss = b.reshape(b.op('Neg', [ratio]), [batch]);
  const ids = Array.from({ length: classes }, (_, j) => j);
  const classIds = b.constI64(ids, [1, classes]);
  const oneHot = (column1: string): string => b.op('Cast', [b.op('Equal', [column1, classIds])], { to: FLOAT }); // [batch, 1] → [batch, classes]
  const dNum = b.op('Sub', [oneHot(y), oneHot(opponent)]);
  // ∂D/∂z: the one-hot rows of the top classes [batch, m, classes], weighted by c and summed over m
  const topOneHot = b.op('Cast', [b.op('Equal', [b.unsqueeze(topClasses, [2]), b.constI64(ids, [1, 1, classes])])], { to: FLOAT });
  const dDen = b.reduce('ReduceSum', b.op('Mul', [topOneHot, b.constF(coef, [1, m, 1])]), [1], false);
  const dz = b.op('Div', [b.op('Sub', [b.op('Mul', [ratio, dDen]), dNum]), den]);
  return { loss, dz };
}
