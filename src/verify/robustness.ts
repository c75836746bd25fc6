// Empirical robustness: benign and PGD accuracy of a network (current or given weights) on a dataset.
import type { Net } from '../engine/net.js';
import type { tf } from '../tfjs/tf.js';
import type { Dataset } from '../data/index.js';
import { pgdAttack, type PgdConfig } from '../train/attacks.js';
import { makeRng } from '../util/rng.js';
import { progressBar } from '../util/progress.js';
import { argmax } from './equivalence.js';

export interface PgdEvalConfig extends PgdConfig {
  /** random restarts; an example counts as robust only if every restart fails */
  restarts: number;
}

export interface RobustnessResult {
  n: number;
  benign_acc: number;
  pgd_acc?: number;
  pgd?: PgdEvalConfig;
  seconds: number;
}

const argmaxRow = (z: Float32Array, r: number, k: number): number => argmax(z, r * k, k);

/**
 * Benign accuracy and (when `pgd` is given) accuracy under PGD with random restarts, on the first `limit`
 * examples.
 */
export function evaluateRobustness(net: Net, d: Dataset, o: { limit?: number; batch?: number; pgd?: PgdEvalConfig; seed?: number; overrides?: Map<string, tf.Tensor>; quiet?: boolean; label?: string }): RobustnessResult {
  const t0 = performance.now();
  const n = Math.min(o.limit ?? d.length, d.length);
  const batch = o.batch ?? 256;
  const per = d.shape[0] * d.shape[1] * d.shape[2];
  const f = net.frozen(o.overrides);
  const k = net.classes;
  const rng = makeRng(`${o.seed ?? 0}:pgd-eval`);
  let benign = 0;
  let robust = 0;
  const bar = progressBar(o.label ?? (o.pgd ? `PGD-${o.pgd.steps} eval` : 'eval'), n, { quiet: o.quiet });
  for (let s = 0; s < n; s += batch) {
    const m = Math.min(batch, n - s);
    const x = d.x.subarray(s * per, (s + m) * per);
    const y = d.y.subarray(s, s + m);
    const z = f.logits(x, m);
    const alive = new Uint8Array(m);
    for (let r = 0; r < m; r++) if (argmaxRow(z, r, k) === y[r]) alive[r] = 1, benign++;
    if (o.pgd && o.pgd.steps > 0 && o.pgd.eps > 0) {
      // the whole batch is attacked (a fixed batch size reuses the compiled attack graphs)
      for (let rs = 0; rs < Math.max(1, o.pgd.restarts) && alive.some((v) => v); rs++) {
        const adv = pgdAttack(f, x, y, m, k, o.pgd, rng);
        const za = f.logits(adv, m);
        for (let r = 0; r < m; r++) if (argmaxRow(za, r, k) !== y[r]) alive[r] = 0;
      }
      for (let r = 0; r < m; r++) robust += alive[r]!;
    }
    bar.update(s + m, o.pgd ? { benign: benign / (s + m), pgd: robust / (s + m) } : { acc: benign / (s + m) });
  }
  bar.stop();
  return {
    n,
    benign_acc: n ? benign / n : 0,
    ...(o.pgd ? { pgd_acc: n ? robust / n : 0, pgd: o.pgd } : {}),
    seconds: (performance.now() - t0) / 1000,
  };
}
