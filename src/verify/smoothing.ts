// Randomized smoothing (Cohen, Rosenfeld, Kolter, ICML 2019): the smoothed classifier g(x) = argmax_c
// P(f(x + δ) = c), δ ~ N(0, σ²I), where f is the ONNX file run by onnxruntime-node. CERTIFY returns the
// class and an L2 radius σ·Φ⁻¹(p_A) that holds with probability 1 − α, p_A the one-sided Clopper-Pearson
// lower bound; PREDICT abstains unless a binomial test separates the top two classes at level α.
// Beta and normal quantiles and the binomial CDF come from stdlib (stdlib-js), a well-kept numerics library.
import betaQuantile from '@stdlib/stats-base-dists-beta-quantile';
import normalQuantile from '@stdlib/stats-base-dists-normal-quantile';
import binomialCdf from '@stdlib/stats-base-dists-binomial-cdf';
import type { OrtClassifier } from './classifier.js';
import { argmaxRows } from './classifier.js';
import type { Rng } from '../util/rng.js';
import { NoiseSource } from './noise.js';

export const ABSTAIN = -1;

export interface SmoothingConfig {
  sigma: number;
  /** samples used to pick the top class */
  n0: number;
  /** samples used to estimate its probability */
  n: number;
  /** failure probability */
  alpha: number;
  /** noise samples per onnxruntime call */
  batch: number;
}

/** One-sided (1 − α) Clopper-Pearson lower bound of a binomial proportion with k successes in n trials. */
export function clopperPearsonLower(k: number, n: number, alpha: number): number {
  if (k <= 0) return 0;
  return betaQuantile(alpha, k, n - k + 1);
}

/** One-sided (1 − α) Clopper-Pearson upper bound. */
export function clopperPearsonUpper(k: number, n: number, alpha: number): number {
  if (k >= n) return 1;
  return betaQuantile(1 - alpha, k + 1, n - k);
}

/** Two-sided binomial test of k successes in n trials against p = ½ (scipy's binom_test). */
export function binomTestHalf(k: number, n: number): number {
  if (n === 0) return 1;
  const lo = Math.min(k, n - k);
  if (2 * lo === n) return 1;
  return Math.min(1, 2 * binomialCdf(lo, n, 0.5));
}

export function gaussianRadius(sigma: number, pA: number): number {
  return sigma * normalQuantile(pA, 0, 1);
}

/**
 * Class counts of f(x + δ) over `num` noise draws for one image x. Double-buffered: the next batch of noise
 * is drawn (in the NoiseSource's worker thread) while onnxruntime-node classifies the current one.
 */
export async function sampleCounts(clf: OrtClassifier, x: Float32Array, num: number, c: SmoothingConfig, rng: Rng, noise?: NoiseSource): Promise<Int32Array> {
  const per = x.length;
  const counts = new Int32Array(clf.classes);
  const src = noise ?? new NoiseSource(true);
  const size = Math.min(num, c.batch);
  const tally = (z: Float32Array, m: number): void => {
    for (const p of argmaxRows(z, m, clf.classes)) counts[p]!++;
  };
  let m = size;
  let ready = src.fill(rng, x, c.sigma, m * per);
  for (let done = 0; done < num;) {
    const cur = await ready;
    const curM = m;
    done += m;
    m = Math.min(size, num - done);
    if (m > 0) ready = src.fill(rng, x, c.sigma, m * per);
    tally(await clf.logits(cur, curM), curM);
    src.recycle(cur);
  }
  return counts;
}

function top2(counts: Int32Array): [number, number] {
  let a = 0;
  for (let j = 1; j < counts.length; j++) if (counts[j]! > counts[a]!) a = j;
  let b = a === 0 ? 1 : 0;
  for (let j = 0; j < counts.length; j++) if (j !== a && counts[j]! > counts[b]!) b = j;
  return [a, b];
}

/** CERTIFY: the predicted class (or ABSTAIN) and its certified L2 radius. */
export async function certify(clf: OrtClassifier, x: Float32Array, c: SmoothingConfig, rng: Rng, noise?: NoiseSource): Promise<{ prediction: number; radius: number; pA: number }> {
  const c0 = await sampleCounts(clf, x, c.n0, c, rng, noise);
  const [cA] = top2(c0);
  const counts = await sampleCounts(clf, x, c.n, c, rng, noise);
  const pA = clopperPearsonLower(counts[cA]!, c.n, c.alpha);
  if (pA < 0.5) return { prediction: ABSTAIN, radius: 0, pA };
  return { prediction: cA, radius: gaussianRadius(c.sigma, pA), pA };
}

/** PREDICT: the smoothed classifier's class, or ABSTAIN when the top two are not separated at level α. */
export async function predictSmoothed(clf: OrtClassifier, x: Float32Array, c: SmoothingConfig, rng: Rng, noise?: NoiseSource): Promise<number> {
  const counts = await sampleCounts(clf, x, c.n, c, rng, noise);
  const [a, b] = top2(counts);
  return binomTestHalf(counts[a]!, counts[a]! + counts[b]!) > c.alpha ? ABSTAIN : a;
}
