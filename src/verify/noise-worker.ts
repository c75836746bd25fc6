// Worker thread of NoiseSource: fills the buffer it is given with x + σ·N(0, I) and hands it back, while the
// main thread runs onnxruntime (whose runs block the main thread).
import { parentPort } from 'node:worker_threads';
import { addGaussianSeeded } from '../util/rng.js';
import type { Job } from './noise.js';

parentPort!.on('message', (j: Job) => {
  addGaussianSeeded(j.seed, j.base, j.sigma, new Float32Array(j.buf, 0, j.length));
  parentPort!.postMessage({ id: j.id, buf: j.buf }, [j.buf]);
});
