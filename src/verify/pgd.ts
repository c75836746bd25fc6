// PGD for verification, with early stopping: only examples onnxruntime classifies correctly are attacked,
// and an example leaves the attack as soon as one of its candidates fools the artifact. A fixed-size pool of
// slots keeps the engine's compiled batch size; a slot whose example is done takes the next one.
// Every iterate's logits come free with the engine's step: candidates the engine says are misclassified,
// and every final candidate, are re-checked by onnxruntime on the artifact, which alone decides.
import type { Frozen } from '../engine/net.js';
import { randomStart } from '../train/attacks.js';
import type { Rng } from '../util/rng.js';
import type { OrtClassifier } from './classifier.js';
import { argmax } from './equivalence.js';
import type { PgdEvalConfig } from './robustness.js';

export interface PgdVerifyStats {
  /** candidates onnxruntime checked, and how many of them it classified differently from the engine */
  candidates: number;
  disagreements: number;
  /** example-steps the engine ran (the work; without early stopping it would be n·runs·(steps+1)) */
  engine_steps: number;
}

/**
 * Attacks the examples with alive[i] = 1 and clears alive[i] for those whose candidate onnxruntime
 * misclassifies. x holds n examples of `per` values; `batch` is the pool size.
 */
export async function pgdVerify(
  f: Frozen, clf: OrtClassifier, x: Float32Array, y: Int32Array, n: number, alive: Uint8Array, c: PgdEvalConfig, rng: Rng,
  o: { batch: number; onProgress?: (done: number) => void },
): Promise<PgdVerifyStats> {
  const per = x.length / n;
  const k = clf.classes;
  const runs = Math.max(1, c.restarts);
  const queue: number[] = [];
  for (let i = 0; i < n; i++) if (alive[i]) queue.push(i);
  let done = n - queue.length;
  const stats: PgdVerifyStats = { candidates: 0, disagreements: 0, engine_steps: 0 };
  const B = Math.max(1, Math.min(o.batch, queue.length));
  if (!queue.length) return stats;
  let xa: Float32Array = new Float32Array(B * per);
  const xc = new Float32Array(B * per);
  const target = new Float32Array(B * k);
  const labels = new Int32Array(B);
  const slot = new Int32Array(B).fill(-1);
  const step = new Int32Array(B);
  const run = new Int32Array(B);
  let q = 0;
  let active = 0;
  const start = (s: number): void => {
    const xi = xc.subarray(s * per, (s + 1) * per);
    xa.set(randomStart(xi, 1, c, rng), s * per);
    step[s] = 0;
  };
  const fill = (s: number): void => {
    if (slot[s]! >= 0) active--;
    slot[s] = -1;
    if (q >= queue.length) return;
    const i = queue[q++]!;
    slot[s] = i;
    active++;
    xc.set(x.subarray(i * per, (i + 1) * per), s * per);
    target.fill(0, s * k, (s + 1) * k);
    target[s * k + y[i]!] = 1;
    labels[s] = y[i]!;
    run[s] = 0;
    start(s);
  };
  for (let s = 0; s < B; s++) fill(s);
  const check = new Float32Array(B * per);
  const checkSlot = new Int32Array(B);
  const checkPred = new Int32Array(B);
  const fooled = new Uint8Array(B);
  while (active > 0) {
    const r = f.pgdStep(xa, xc, B, target, c.alpha, c.eps, c.norm);
    stats.engine_steps += active;
    // candidates for onnxruntime: the engine says misclassified, or the last iterate of a run
    let m = 0;
    for (let s = 0; s < B; s++) {
      if (slot[s]! < 0) continue;
      const p = argmax(r.logits, s * k, k);
      if (p !== labels[s] || step[s] === c.steps) {
        check.set(xa.subarray(s * per, (s + 1) * per), m * per);
        checkSlot[m] = s;
        checkPred[m++] = p;
      }
    }
    fooled.fill(0);
    if (m) {
      const ortPred = await clf.predict(check.subarray(0, m * per), m);
      stats.candidates += m;
      for (let j = 0; j < m; j++) {
        if (ortPred[j] !== checkPred[j]) stats.disagreements++;
        if (ortPred[j] !== labels[checkSlot[j]!]) fooled[checkSlot[j]!] = 1;
      }
    }
    xa = r.next;
    for (let s = 0; s < B; s++) {
      const i = slot[s]!;
      if (i < 0) continue;
      if (fooled[s]) {
        alive[i] = 0;
        done++;
        fill(s);
      } else if (step[s] === c.steps) {
        if (++run[s]! < runs) start(s);
        else {
          done++;
          fill(s);
        }
      } else step[s]!++;
    }
    o.onProgress?.(done);
  }
  return stats;
}
