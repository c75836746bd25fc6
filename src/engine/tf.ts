// The TensorFlow.js namespace used everywhere in onnx-hydra (tfjs-core; backends register themselves).
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';

export { tf };

// tfjs-core assumes a browser-like environment unless told; PROD skips its debug-mode checks.
tf.env().set('PROD', true);

let quietDone = false;
/** Make sure a backend is active, and drop the backend's one-time "install tfjs-node" banner (we choose engines ourselves). */
export function quietBackend(): void {
  if (quietDone) return;
  const b = tf.backend() as unknown as { firstUse?: boolean };
  if (b && 'firstUse' in b) b.firstUse = false;
  quietDone = true;
}

/** Ensure some backend is ready (the pure-JS cpu one unless an engine was chosen). */
export function ensureBackend(): string {
  if (!tf.getBackend()) tf.setBackend('cpu');
  quietBackend();
  return tf.getBackend();
}
