// The TensorFlow.js namespace used everywhere in onnx-hydra. The umbrella package's Node bundle registers
// every op's gradient (tfjs-core alone does not, and its per-gradient ESM files cannot be imported by Node).
import * as tf from '@tensorflow/tfjs';

export { tf };

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
