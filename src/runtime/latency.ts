// Latency of a model file on onnxruntime-node: batch 1 (median and 90th percentile of single runs, what a
// request-serving deployment sees) and a large batch (images per second, what offline scoring sees).
// Inputs are uniform in [0,1] of the model's input shape; a warm-up precedes every measurement.
import * as ort from 'onnxruntime-node';
import { createSession, type Provider } from './ort.js';
import { defaultThreads } from '../util/threads.js';

export interface LatencyResult {
  provider: Provider;
  /** intra-op threads the session ran with (asked for, or one per physical core: util/threads.ts) */
  threads: number;
  batch1: { median_ms: number; p90_ms: number; runs: number };
  batchN: { batch: number; ms: number; images_per_second: number; runs: number };
}

const quantile = (xs: number[], q: number): number => {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

/**
 * `perSample` is the input shape without the batch dimension (e.g. [1, 28, 28]); each measurement runs for
 * about `seconds` after its warm-up (at least 5 runs).
 */
export async function measureLatency(model: string | Uint8Array, perSample: number[], o: { batch?: number; threads?: number; provider?: Provider; seconds?: number } = {}): Promise<LatencyResult> {
  const threads = o.threads || defaultThreads();
  const s = await createSession(model, { provider: o.provider, threads });
  const seconds = o.seconds ?? 1;
  const feed = (b: number): Record<string, ort.Tensor> => {
    const n = b * perSample.reduce((p, d) => p * d, 1);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = ((i * 2654435761) >>> 0) / 4294967296; // fixed, evenly spread values in [0,1)
    return { [s.inputNames[0]!]: new ort.Tensor('float32', x, [b, ...perSample]) };
  };
  const time = async (b: number): Promise<number[]> => {
    const f = feed(b);
    for (let i = 0; i < 3; i++) await s.session.run(f);
    const out: number[] = [];
    const t0 = performance.now();
    while (out.length < 5 || (performance.now() - t0 < seconds * 1000 && out.length < 10_000)) {
      const t = performance.now();
      await s.session.run(f);
      out.push(performance.now() - t);
    }
    return out;
  };
  try {
    const one = await time(1);
    const batch = o.batch ?? 64;
    const many = await time(batch);
    const ms = quantile(many, 0.5);
    return {
      provider: s.provider, threads,
      batch1: { median_ms: quantile(one, 0.5), p90_ms: quantile(one, 0.9), runs: one.length },
      batchN: { batch, ms, images_per_second: (1000 * batch) / ms, runs: many.length },
    };
  } finally {
    await s.session.release();
  }
}
