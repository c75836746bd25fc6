// Gaussian noise for randomized smoothing, drawn in a worker thread so that it overlaps onnxruntime's
// runs on the main thread. Seeds come from the caller's generator in call order, so the noise (and every
// certificate) is the same as drawing it inline; without worker threads it is drawn inline. Buffers move
// between the threads by transfer (onnxruntime-node does not take SharedArrayBuffer-backed tensors).
import { Worker } from 'node:worker_threads';
import { addGaussianSeeded, noiseSeed, type Rng } from '../util/rng.js';

/** one fill request to the worker (its buffer is transferred there and back) */
export interface Job { id: number; buf: ArrayBuffer; length: number; base: Float32Array; sigma: number; seed: number[] }

export class NoiseSource {
  private worker?: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { job: Job; resolve: (a: Float32Array) => void }>();
  private readonly free: ArrayBuffer[] = [];

  constructor(inline = false) {
    if (inline) return;
    try {
      const w = new Worker(new URL('./noise-worker.js', import.meta.url));
      w.unref();
      w.on('message', (m: { id: number; buf: ArrayBuffer }) => {
        const p = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        p?.resolve(new Float32Array(m.buf, 0, p.job.length));
      });
      w.on('error', () => this.inline());
      w.on('exit', () => this.inline());
      this.worker = w;
    } catch {
      this.worker = undefined;
    }
  }

  get threaded(): boolean {
    return !!this.worker;
  }

  /** the worker is gone: redo what it was given here (its buffers went with it) */
  private inline(): void {
    this.worker = undefined;
    for (const { job, resolve } of this.waiting.values()) {
      const out = new Float32Array(job.length);
      addGaussianSeeded(job.seed, job.base, job.sigma, out);
      resolve(out);
    }
    this.waiting.clear();
  }

  private take(length: number): ArrayBuffer {
    const i = this.free.findIndex((b) => b.byteLength >= 4 * length);
    return i >= 0 ? this.free.splice(i, 1)[0]! : new ArrayBuffer(4 * length);
  }

  /** length values base[i % base.length] + σ·N(0,1); give the array back with recycle() when done. */
  fill(rng: Rng, base: Float32Array, sigma: number, length: number): Promise<Float32Array> {
    const seed = noiseSeed(rng);
    const buf = this.take(length);
    if (!this.worker) {
      const out = new Float32Array(buf, 0, length);
      addGaussianSeeded(seed, base, sigma, out);
      return Promise.resolve(out);
    }
    // a view would take its whole underlying buffer along (postMessage copies the buffer, not the view)
    const own = base.byteOffset === 0 && base.byteLength === base.buffer.byteLength ? base : base.slice();
    const job: Job = { id: this.next++, buf, length, base: own, sigma, seed };
    return new Promise((resolve) => {
      this.waiting.set(job.id, { job, resolve });
      this.worker!.postMessage(job, [buf]);
    });
  }

  recycle(a: Float32Array): void {
    if (a.buffer instanceof ArrayBuffer && this.free.length < 4) this.free.push(a.buffer);
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }
}
