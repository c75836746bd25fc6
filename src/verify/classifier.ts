// The artifact as onnxruntime-node runs it: batched logits, predictions and a query count. Every verdict
// of `verify` (benign, the final check of each attack, smoothing) goes through this.
import { createSession, runSession, type OrtSession, type Provider } from '../runtime/ort.js';
import { argmax } from './equivalence.js';
import { UserError } from '../util/errors.js';

export class OrtClassifier {
  queries = 0;
  private constructor(readonly s: OrtSession, readonly inputShape: number[], readonly classes: number, readonly maxBatch: number) {}

  /**
   * `inputShape` is one example's shape [C, H, W]; the batch dimension must be free (or equal maxBatch).
   * Without `classes`, one run on `probe` (one example) tells the number of outputs.
   */
  static async open(model: string | Uint8Array, inputShape: number[], classes: number | undefined, o: { provider?: Provider; maxBatch?: number; probe?: Float32Array; threads?: number; spin?: boolean } = {}): Promise<OrtClassifier> {
    const s = await createSession(model, { provider: o.provider, threads: o.threads, spin: o.spin });
    let k = classes;
    if (k === undefined) {
      try {
        const per = inputShape.reduce((p, d) => p * d, 1);
        const [z] = await runSession(s, [{ data: o.probe ?? new Float32Array(per), shape: [1, ...inputShape] }]);
        k = z!.data.length;
      } catch (e) {
        await s.session.release();
        throw new UserError(`onnxruntime-node cannot run the model on inputs of shape [${inputShape}]: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    return new OrtClassifier(s, inputShape, k, o.maxBatch ?? 512);
  }

  get provider(): Provider {
    return this.s.provider;
  }

  /** Logits [n, classes] for n examples stored back to back in x. */
  async logits(x: Float32Array, n: number): Promise<Float32Array> {
    const per = this.inputShape.reduce((p, d) => p * d, 1);
    const k = this.classes;
    const out = new Float32Array(n * k);
    for (let from = 0; from < n; from += this.maxBatch) {
      const m = Math.min(this.maxBatch, n - from);
      const [r] = await runSession(this.s, [{ data: x.subarray(from * per, (from + m) * per), shape: [m, ...this.inputShape] }]);
      out.set(r!.data.subarray(0, m * k), from * k);
    }
    this.queries += n;
    return out;
  }

  async predict(x: Float32Array, n: number): Promise<Int32Array> {
    const z = await this.logits(x, n);
    return argmaxRows(z, n, this.classes);
  }

  async release(): Promise<void> {
    await this.s.session.release();
  }
}

export function argmaxRows(z: Float32Array, n: number, k: number): Int32Array {
  return Int32Array.from({ length: n }, (_, r) => argmax(z, r * k, k));
}
