// The TensorFlow.js namespace used everywhere in onnx-hydra. The umbrella package's Node bundle registers
// every op's gradient (tfjs-core alone does not, and its per-gradient ESM files cannot be imported by Node).
import * as tf from '@tensorflow/tfjs';
import { installFastCpuKernels } from './cpu-fast.js';

export { tf };

installFastCpuKernels();

// Comparisons and logical ops have zero gradient (TensorFlow declares them non-differentiable); tfjs
// registers nothing for them, so tf.where(x > 0, …) could not be differentiated with respect to x.
for (const kernelName of ['Greater', 'GreaterEqual', 'Less', 'LessEqual', 'Equal', 'NotEqual', 'LogicalAnd', 'LogicalOr', 'LogicalNot', 'LogicalXor']) {
  if (tf.getGradient(kernelName)) continue;
  tf.registerGradient({
    kernelName,
    gradFunc: (dy: tf.Tensor | tf.Tensor[]) => {
      const d = Array.isArray(dy) ? dy[0]! : dy;
      return { a: () => tf.zerosLike(d), b: () => tf.zerosLike(d), x: () => tf.zerosLike(d) };
    },
  });
}

const quieted = new Set<string>();
/** Drop a backend's one-time "install tfjs-node" banner: onnx-hydra chooses and reports engines itself. */
export function quietBackend(): void {
  const name = tf.getBackend();
  if (quieted.has(name)) return;
  const b = tf.backend() as unknown as { firstUse?: boolean };
  if (b && 'firstUse' in b) b.firstUse = false;
  quieted.add(name);
}

/** Ensure a backend is active (the pure-JS cpu one unless an engine was chosen) and return its name. */
export function ensureBackend(): string {
  if (!tf.engine().backendName) tf.setBackend('cpu');
  quietBackend();
  return tf.getBackend();
}
