// The network as objectives, attacks and trainers see it: differentiable logits (tf), and fast helpers
// for fixed weights that work on plain Float32Arrays. Runs on the compiled onnxruntime engine when it can,
// else op by op on the tfjs backend.
import { tf } from '../tfjs/tf.js';
import { TfGraph } from '../graph/graph.js';
import { CompiledNet, NotCompilableError, boundsModel, type AttackLoss, type DlrLoss, type LogitGradLoss, type LossGrad } from './compile/compile.js';
import { BOUNDS_EPS, BOUNDS_SPEC } from './compile/bounds.js';
import { loadModel } from '../onnx/model.js';
import type { EngineInfo } from './select.js';
import { boxOf, stepInPlace } from './step.js';
import { dlrRows } from './dlr.js';

export type { AttackLoss, DlrLoss, LogitGradLoss, LossGrad } from './compile/compile.js';

export interface LogitsOptions {
  training: boolean;
  gradX?: boolean;
  gradParams?: boolean;
  /** parameter values to use instead of the variables (e.g. masked weights), by initializer name */
  overrides?: Map<string, tf.Tensor>;
  seed?: number;
  /**
   * The loss differentiated is the mean cross-entropy of these logits against this target ([n, classes],
   * one-hot or soft), plus terms that do not depend on the logits: the compiled engine then runs forward and
   * backward in one onnxruntime call (it checks the gradient that arrives and recomputes when it differs).
   */
  ceTarget?: Float32Array;
  /**
   * x is [clean; adversarial] and the loss is TRADES' (see CompiledRunOptions.trades): one onnxruntime call
   * on the compiled engine, checked like `ceTarget`.
   */
  trades?: { labels: Float32Array; beta: number };
  /** training-mode BatchNormalization normalises each of this many equal parts of x on its own (default 1) */
  bnGroups?: number;
}

/** Fixed weights: inference and input gradients of a summed loss, on Float32Arrays. */
export interface Frozen {
  logits(x: Float32Array, n: number): Float32Array;
  /** Input gradient of the summed loss, the logits, and (dlr) the loss per example: one onnxruntime call when compiled. */
  lossGrad(x: Float32Array, n: number, loss: AttackLoss | LogitGradLoss | DlrLoss): LossGrad;
  /**
   * One PGD iteration toward `target` (one-hot labels or probabilities): gradient of −Σ target·log softmax,
   * signed (L∞) or L2 step, projection and clipping; returns the next iterate (a new array) and the logits
   * at xAdv. Fused into one onnxruntime call on the compiled engine.
   */
  pgdStep(xAdv: Float32Array, x: Float32Array, n: number, target: Float32Array, alpha: number, eps: number, norm: 'linf' | 'l2'): { next: Float32Array; logits: Float32Array };
}

export class Net {
  private compiled?: CompiledNet;
  /** set when the compiled engine could not take this model, with the reason */
  fallbackReason?: string;
  readonly inputShape: number[];
  readonly classes: number;
  /** BatchNormalization layers: training-mode passes depend on their batch's statistics */
  readonly hasBatchNorm: boolean;

  constructor(readonly graph: TfGraph, readonly engine: EngineInfo) {
    if (engine.kind === 'ort') this.compiled = new CompiledNet(graph.prepared);
    this.inputShape = graph.inputs[0]!.shape.slice(1) as number[];
    const out = graph.prepared.shapes.get(graph.outputs[0]!);
    this.classes = (out?.at(-1) as number) ?? 10;
    this.hasBatchNorm = graph.prepared.runNodes.some((n) => n.opType === 'BatchNormalization');
  }

  /** Engine actually used (ort may have fallen back to per-op tfjs for this model). */
  describe(): string {
    return this.fallbackReason ? `${this.engine.description} → per-op tfjs (${this.fallbackReason})` : this.engine.description;
  }

  params(overrides?: Map<string, tf.Tensor>): Map<string, tf.Tensor> {
    const m = new Map<string, tf.Tensor>(this.graph.variables);
    if (overrides) for (const [k, v] of overrides) m.set(k, v);
    return m;
  }

  /** Per compiled configuration (training passes, attack kinds): weights baked into sessions (true), fed (false), or not yet decided. */
  weightHandling(): Record<string, boolean | undefined> {
    return this.compiled?.bakeChoices() ?? {};
  }

  private fallback(e: unknown): void {
    if (!(e instanceof NotCompilableError)) throw e;
    this.fallbackReason = e.message;
    this.compiled?.dispose();
    this.compiled = undefined;
    process.stderr.write(`onnx-hydra: the compiled engine cannot differentiate this model (${e.message}); using per-op tfjs\n`);
  }

  logits(x: tf.Tensor, o: LogitsOptions): { logits: tf.Tensor; updates: Map<string, tf.Tensor> } {
    if (this.compiled) {
      try {
        return this.compiled.run(x, this.params(o.overrides), {
          training: o.training, gradX: o.gradX ?? true, gradParams: o.gradParams ?? true, seed: o.seed, ceTarget: o.ceTarget,
          trades: o.trades, bnGroups: o.bnGroups,
        });
      } catch (e) {
        this.fallback(e);
      }
    }
    const groups = o.training && this.hasBatchNorm ? o.bnGroups ?? 1 : 1;
    if (groups > 1) {
      // one pass per part, each with its own batch statistics; the running statistics of the last
      const parts = tf.split(x, groups, 0).map((part) => this.graph.forward(part, { training: true }, o.overrides));
      return { logits: tf.concat(parts.map((r) => r.outputs[0]!), 0), updates: parts.at(-1)!.updates };
    }
    const r = this.graph.forward(x, { training: o.training }, o.overrides);
    return { logits: r.outputs[0]!, updates: r.updates };
  }

  private readonly boundGraphs = new Map<string, TfGraph>();
  /** set when bound graphs could not be compiled, with the reason */
  boundsFallback?: string;

  /**
   * Interval (IBP) bounds of the logits over the L∞ ball of radius eps around x, intersected with [0,1],
   * for the inference-mode network; differentiable with respect to the parameters. With `labels`, also
   * the CROWN-IBP lower bounds of the margins z_y − z_j ([N, classes], 0 at j = y).
   */
  bounds(x: tf.Tensor, eps: number, o: { overrides?: Map<string, tf.Tensor>; gradParams?: boolean; labels?: Int32Array } = {}): { lower: tf.Tensor; upper: tf.Tensor; crownMargins?: tf.Tensor } {
    const n = x.shape[0]!;
    const k = this.classes;
    let spec: Float32Array | undefined;
    if (o.labels) {
      spec = new Float32Array(n * k * k);
      for (let i = 0; i < n; i++) for (let s = 0; s < k; s++) {
        spec[(i * k + s) * k + o.labels[i]!]! += 1;
        spec[(i * k + s) * k + s]! -= 1;
      }
    }
    let out: tf.Tensor | undefined;
    if (this.compiled && !this.boundsFallback) {
      try {
        out = this.compiled.run(x, this.params(o.overrides), { training: false, gradX: false, gradParams: o.gradParams ?? true, bounds: { eps, spec } }).logits;
      } catch (e) {
        // only the bound graphs go op by op; the other passes stay compiled
        if (!(e instanceof NotCompilableError)) throw e;
        this.boundsFallback = e.message;
        process.stderr.write(`onnx-hydra: the compiled engine cannot differentiate the bound graph (${e.message}); bounds run op by op in tfjs\n`);
      }
    }
    if (!out) {
      const key = `${n}|${!!spec}`;
      let g = this.boundGraphs.get(key);
      if (!g) this.boundGraphs.set(key, (g = TfGraph.fromModel(loadModel(boundsModel(this.graph.prepared, n, !!spec)))));
      const feeds: Record<string, tf.Tensor> = { [this.graph.inputs[0]!.name]: x, [BOUNDS_EPS]: tf.scalar(eps) };
      if (spec) feeds[BOUNDS_SPEC] = tf.tensor(spec, [n, k, k]);
      const params = this.params(o.overrides);
      for (const i of g.inputs) if (!(i.name in feeds)) feeds[i.name] = params.get(i.name)!;
      out = g.forward(feeds).outputs[0]!;
    }
    const parts = tf.split(out, spec ? 3 : 2, 0);
    return { lower: parts[0]!, upper: parts[1]!, crownMargins: parts[2] };
  }

  /** Eval-mode network with the current (or given) weights frozen. */
  frozen(overrides?: Map<string, tf.Tensor>): Frozen {
    if (this.compiled) {
      const f = this.compiled.frozen(this.params(overrides));
      return {
        logits: (x, n) => this.guard(() => f.logits(x, n), () => this.tfFrozen(overrides).logits(x, n)),
        lossGrad: (x, n, l) => this.guard(() => f.lossGrad(x, n, l), () => this.tfFrozen(overrides).lossGrad(x, n, l)),
        pgdStep: (xa, x, n, t, a, e, norm) => this.guard(() => f.pgdStep(xa, x, n, t, a, e, norm), () => this.tfFrozen(overrides).pgdStep(xa, x, n, t, a, e, norm)),
      };
    }
    return this.tfFrozen(overrides);
  }

  private guard<T>(fast: () => T, slow: () => T): T {
    if (this.compiled) {
      try {
        return fast();
      } catch (e) {
        this.fallback(e);
      }
    }
    return slow();
  }

  private tfFrozen(overrides?: Map<string, tf.Tensor>): Frozen {
    const shapeOf = (n: number): number[] => [n, ...this.inputShape];
    const k = this.classes;
    const lossGrad: Frozen['lossGrad'] = (x, n, loss) => tf.tidy(() => {
      const xt = tf.tensor(x, shapeOf(n));
      let logitsOut: Float32Array = new Float32Array();
      let lossOut: Float32Array | undefined;
      const g = tf.grad((xx: tf.Tensor) => {
        const z = this.graph.forward(xx, {}, overrides).outputs[0]!;
        logitsOut = z.dataSync() as Float32Array;
        if (loss.kind === 'ce' || loss.kind === 'kl') {
          const target = loss.kind === 'ce' ? tf.oneHot(tf.tensor1d(loss.labels, 'int32'), k) : tf.tensor(loss.target, [n, k]);
          return tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(z))));
        }
        // a logit gradient dz (given, or DLR's from these logits): Σ dz·z, whose input gradient is dz backpropagated
        let dz: Float32Array;
        if (loss.kind === 'logit-grad') dz = loss.dz;
        else {
          dz = new Float32Array(n * k);
          lossOut = dlrRows(logitsOut, n, k, loss.labels, loss.targets, dz);
        }
        return tf.sum(tf.mul(tf.tensor(dz, [n, k]), z));
      })(xt);
      return { grad: g.dataSync() as Float32Array, logits: logitsOut, ...(lossOut ? { loss: lossOut } : {}) };
    });
    return {
      logits: (x, n) => tf.tidy(() => this.graph.forward(tf.tensor(x, shapeOf(n)), {}, overrides).outputs[0]!.dataSync() as Float32Array),
      lossGrad,
      // the fused step's contract, from the gradient of −Σ target·log softmax (cross-entropy for one-hot targets)
      pgdStep: (xAdv, x, n, target, alpha, eps, norm) => {
        const { grad, logits } = lossGrad(xAdv, n, { kind: 'kl', target });
        const next = xAdv.slice();
        stepInPlace(next, grad, x, n, { alpha, eps, norm }, norm === 'linf' ? boxOf(x, eps) : undefined);
        return { next, logits };
      },
    };
  }

  dispose(): void {
    for (const g of this.boundGraphs.values()) g.dispose();
    this.compiled?.dispose();
  }
}
