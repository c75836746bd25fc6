// Optimizers with PyTorch's semantics (weight decay added to the gradient before momentum), and
// learning-rate schedules. Hand-written: tfjs optimizers have no weight decay and their state is not
// easy to checkpoint; these are a few lines each.
import { tf } from '../tfjs/tf.js';
import { UserError } from '../util/errors.js';

export interface OptimizerConfig {
  name: 'sgd' | 'adam';
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov?: boolean;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

export class Optimizer {
  // state as plain arrays: tfjs' pure-JS elementwise ops cost ~35 ns per element, these loops ~1 ns
  private readonly slots = new Map<string, Float32Array[]>();
  private t = 0;
  constructor(readonly cfg: OptimizerConfig) {}

  /** One update of `vars` with `grads` at learning rate `lr`. Params not in `grads` are left alone. */
  apply(vars: Map<string, tf.Variable>, grads: Record<string, tf.Tensor>, lr: number): void {
    const c = this.cfg;
    this.t++;
    for (const [name, v] of vars) {
      const gt = grads[name];
      if (!gt) continue;
      const w = v.dataSync() as Float32Array;
      const g = gt.dataSync() as Float32Array;
      const n = w.length;
      const out = new Float32Array(n);
      const wd = c.weightDecay;
      if (c.name === 'sgd') {
        const mu = c.momentum;
        let s = this.slots.get(name)?.[0];
        const first = !s;
        if (mu && !s) {
          s = new Float32Array(n);
          this.slots.set(name, [s]);
        }
        for (let i = 0; i < n; i++) {
          const gi = g[i]! + wd * w[i]!;
          let step = gi;
          if (mu) {
            // PyTorch starts the momentum buffer at the first gradient
            const b = first ? gi : mu * s![i]! + gi;
            s![i] = b;
            step = c.nesterov ? gi + mu * b : b;
          }
          out[i] = w[i]! - lr * step;
        }
      } else {
        const b1 = c.beta1 ?? 0.9;
        const b2 = c.beta2 ?? 0.999;
        const eps = c.eps ?? 1e-8;
        let s = this.slots.get(name);
        if (!s) {
          s = [new Float32Array(n), new Float32Array(n)];
          this.slots.set(name, s);
        }
        const [m, vv] = s as [Float32Array, Float32Array];
        const c1 = 1 - b1 ** this.t;
        const c2 = 1 - b2 ** this.t;
        for (let i = 0; i < n; i++) {
          const gi = g[i]! + wd * w[i]!;
          m[i] = b1 * m[i]! + (1 - b1) * gi;
          vv[i] = b2 * vv[i]! + (1 - b2) * gi * gi;
          out[i] = w[i]! - (lr * (m[i]! / c1)) / (Math.sqrt(vv[i]! / c2) + eps);
        }
      }
      v.assign(tf.tensor(out, v.shape));
    }
  }

  state(): { t: number; slots: Record<string, Float32Array[]> } {
    const slots: Record<string, Float32Array[]> = {};
    for (const [k, s] of this.slots) slots[k] = s.map((a) => a.slice());
    return { t: this.t, slots };
  }

  load(st: { t: number; slots: Record<string, Float32Array[]> }, _shapes?: Map<string, number[]>): void {
    this.slots.clear();
    this.t = st.t;
    for (const [k, arr] of Object.entries(st.slots)) this.slots.set(k, arr.map((a) => a.slice()));
  }

  dispose(): void {
    this.slots.clear();
  }
}

export interface ScheduleConfig {
  kind: 'cosine' | 'step' | 'constant' | 'linear';
  /** warm-up epochs (linear from lr/10... to lr) */
  warmup: number;
  /** step: epochs where the lr is multiplied by gamma */
  milestones: number[];
  gamma: number;
}

/** Learning rate at a (fractional) epoch position in [0, epochs). */
export function learningRate(base: number, s: ScheduleConfig, epoch: number, epochs: number): number {
  if (s.warmup > 0 && epoch < s.warmup) return base * (epoch + 1e-3) / s.warmup;
  const e = epoch - s.warmup;
  const total = Math.max(1e-9, epochs - s.warmup);
  switch (s.kind) {
    case 'constant': return base;
    case 'cosine': return base * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, e / total)));
    case 'linear': return base * Math.max(0, 1 - e / total);
    case 'step': return base * s.gamma ** s.milestones.filter((m) => epoch >= m).length;
    default: throw new UserError(`unknown schedule '${s.kind as string}'`);
  }
}
