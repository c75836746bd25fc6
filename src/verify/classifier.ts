// The artifact as onnxruntime-node runs it: batched logits, predictions and a query count. Every verdict
// of `verify` (benign, the final check of each attack, smoothing) goes through this.
import { createSession, runSession, type OrtSession, type Provider } from '../runtime/ort.js';

export class OrtClassifier {
  queries = 0;
  private constructor(readonly s: OrtSession, readonly inputShape: number[], readonly classes: number, readonly maxBatch: number) {}

  /** `inputShape` is one example's shape [C, H, W]; the batch dimension must be free (or equal maxBatch). */
  static async open(model: string | Uint8Array, inputShape: number[], classes: number, o: { provider?: Provider; maxBatch?: number } = {}): Promise<OrtClassifier> {
    const s = await createSession(model, { provider: o.provider });
    return new OrtClassifier(s, inputShape, classes, o.maxBatch ?? 512);
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
  const out = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (z[r * k + j]! > z[r * k + best]!) best = j;
    out[r] = best;
  }
  return out;
}
