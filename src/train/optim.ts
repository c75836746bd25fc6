// Optimizers with PyTorch's semantics (weight decay added to the gradient before momentum), and
// learning-rate schedules. Hand-written: tfjs optimizers have no weight decay, their state is not easy to
// checkpoint, and their elementwise ops cost ~35 ns per weight in the pure-JS backend.
import { tf } from '../tfjs/tf.js';
import { UserError } from '../util/errors.js';
import { wasmInstance } from '../util/wasm.js';

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

interface OptimKernel {
  memory: WebAssembly.Memory;
  sgd(w: number, g: number, s: number, n: number, lr: number, mu: number, wd: number, nesterov: boolean, first: boolean): void;
  adam(w: number, g: number, m: number, v: number, n: number, lr: number, b1: number, b2: number, eps: number, wd: number, c1: number, c2: number): void;
}

/** A parameter's places in the optimizer kernel's memory (byte offsets): its state arrays and its weights. */
interface ParamSlots {
  n: number;
  at: number[];
  weightsAt: number;
  /** the variable's array the weights were last copied out to */
  holds?: Float32Array;
}

export class Optimizer {
  // the update runs in WebAssembly SIMD (src/util/wasm/optim.as.ts); its state (momentum, Adam's moments)
  // and a copy of the weights stay in the kernel's memory between steps; the gradients are copied in, the new
  // weights out, and the weights in only when a variable holds another array than the one last written
  private kernel?: OptimKernel;
  /** end of the kernel's used memory (bytes) */
  private top = 0;
  /**
   * per parameter: byte offsets of its state arrays in the kernel's memory, of its weights there, and the
   * variable's array those weights were last copied out to (while the variable still holds that array, the
   * kernel's copy is current and is not copied in again: a 45 MB copy per ResNet-18 step, ~8 ms)
   */
  private readonly slots = new Map<string, ParamSlots>();
  private scratch = { at: 0, n: 0 };
  private t = 0;
  constructor(readonly cfg: OptimizerConfig) {}

  private get slotCount(): number {
    return this.cfg.name === 'adam' ? 2 : this.cfg.momentum ? 1 : 0;
  }

  private get k(): OptimKernel {
    if (!this.kernel) {
      this.kernel = wasmInstance<OptimKernel>('optim.wasm');
      this.top = this.kernel.memory.buffer.byteLength;
    }
    return this.kernel;
  }

  /** `bytes` of fresh (zeroed) kernel memory, 16-byte aligned. */
  private alloc(bytes: number): number {
    const memory = this.k.memory;
    const at = Math.ceil(this.top / 16) * 16;
    const end = at + bytes;
    const have = memory.buffer.byteLength;
    if (end > have) {
      try {
        memory.grow(Math.ceil((end - have) / 65536));
      } catch {
        throw new UserError(`the optimizer's state (${(end / 2 ** 30).toFixed(1)} GiB) does not fit in WebAssembly's 4 GiB memory: train fewer parameters at once`);
      }
    }
    this.top = end;
    return at;
  }

  private slotsOf(name: string, n: number): { slot: ParamSlots; fresh: boolean } {
    const hit = this.slots.get(name);
    if (hit) {
      if (hit.n !== n) throw new Error(`parameter '${name}' changed size (${hit.n} → ${n}) under the optimizer`);
      return { slot: hit, fresh: false };
    }
    const slot = { n, at: Array.from({ length: this.slotCount }, () => this.alloc(4 * n)), weightsAt: this.alloc(4 * n) };
    this.slots.set(name, slot);
    return { slot, fresh: true };
  }

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
      const { slot, fresh } = this.slotsOf(name, n);
      const stateAt = slot.at;
      if (this.scratch.n < n) this.scratch = { at: this.alloc(4 * n), n };
      const k = this.k;
      const wAt = slot.weightsAt;
      const gAt = this.scratch.at;
      const mem = new Float32Array(k.memory.buffer);
      if (slot.holds !== w) mem.set(w, wAt / 4);
      mem.set(g, gAt / 4);
      if (c.name === 'sgd') {
        // PyTorch starts the momentum buffer at the first gradient
        k.sgd(wAt, gAt, stateAt[0] ?? 0, n, lr, c.momentum, c.weightDecay, !!c.nesterov, fresh);
      } else {
        const b1 = c.beta1 ?? 0.9;
        const b2 = c.beta2 ?? 0.999;
        k.adam(wAt, gAt, stateAt[0]!, stateAt[1]!, n, lr, b1, b2, c.eps ?? 1e-8, c.weightDecay, 1 - b1 ** this.t, 1 - b2 ** this.t);
      }
      // the new weights go back into the array the variable held (a fresh 45 MB per ResNet-18 step cost ~12 ms
      // of page faults), under a new tensor: consumers that cache by tensor identity (the compiled engine's
      // weights) see a new value. Nothing keeps a variable's old array across a step.
      w.set(mem.subarray(wAt / 4, wAt / 4 + n));
      v.assign(tf.tensor(w, v.shape));
      slot.holds = w;
    }
  }

  state(): { t: number; slots: Record<string, Float32Array[]> } {
    const slots: Record<string, Float32Array[]> = {};
    const mem = new Float32Array(this.k.memory.buffer);
    for (const [k, s] of this.slots) slots[k] = s.at.map((at) => mem.slice(at / 4, at / 4 + s.n));
    return { t: this.t, slots };
  }

  load(st: { t: number; slots: Record<string, Float32Array[]> }, _shapes?: Map<string, number[]>): void {
    this.dispose();
    this.t = st.t;
    for (const [k, arr] of Object.entries(st.slots)) {
      if (arr.length !== this.slotCount) throw new UserError(`optimizer state for '${k}' has ${arr.length} arrays, ${this.cfg.name} keeps ${this.slotCount}`);
      const n = arr[0]?.length ?? 0;
      const { at } = this.slotsOf(k, n).slot;
      const mem = new Float32Array(this.k.memory.buffer);
      at.forEach((a, i) => mem.set(arr[i]!, a / 4));
    }
  }

  dispose(): void {
    // a fresh kernel (its memory released with the old one)
    this.slots.clear();
    this.kernel = undefined;
    this.scratch = { at: 0, n: 0 };
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
