// Choosing the engine that trains and attacks: tfjs-node(-gpu) when installed, else onnx-hydra's compiled
// onnxruntime path, else the pure-JS tfjs cpu backend.
import { createRequire } from 'node:module';
import { tf, quietBackend } from '../tfjs/tf.js';
import { syncOrtAvailable } from './ort-sync.js';
import { UserError } from '../util/errors.js';
import { defaultThreads } from '../util/threads.js';

const require = createRequire(import.meta.url);

export const BACKENDS = ['auto', 'ort', 'tensorflow', 'tensorflow-gpu', 'cpu', 'wasm'] as const;
export type BackendChoice = (typeof BACKENDS)[number];

export interface EngineInfo {
  /** what was chosen: 'ort' (compiled onnxruntime graphs), 'tensorflow' (tfjs-node[-gpu]) or 'cpu' */
  kind: 'ort' | 'tensorflow' | 'cpu';
  /** the tfjs backend that runs tfjs ops (losses, optimizers; the whole graph unless kind is 'ort') */
  tfBackend: string;
  gpu: boolean;
  /** one line for logs and reports */
  description: string;
}

const TFJS_VERSION = '4.22.0';

function tryTfjsNode(pkg: '@tensorflow/tfjs-node' | '@tensorflow/tfjs-node-gpu'): { ok: boolean; gpu: boolean; why?: string } {
  try {
    require(pkg);
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0]!;
    return { ok: false, gpu: false, why: /Cannot find module/.test(msg) ? 'not installed' : msg };
  }
  try {
    tf.setBackend('tensorflow');
    const b = tf.backend() as unknown as { binding?: { isUsingGpuDevice?: () => boolean } };
    const gpu = !!b.binding?.isUsingGpuDevice?.();
    return { ok: true, gpu };
  } catch (e) {
    return { ok: false, gpu: false, why: (e as Error).message.split('\n')[0]! };
  }
}

function installHint(pkg: string): string {
  return `${pkg} is not installed. Install it with \`npm install ${pkg}@${TFJS_VERSION}\` (its install script downloads libtensorflow` +
    `${pkg.endsWith('gpu') ? ' with CUDA' : ''} from storage.googleapis.com), or use --backend ort (onnx-hydra's compiled onnxruntime engine)`;
}

function ortDescription(): string {
  let ver = '?';
  try {
    ver = (require('onnxruntime-node/package.json') as { version: string }).version;
  } catch { /* version unknown */ }
  return `ort: onnx-hydra compiled graphs on onnxruntime-node ${ver} CPU (${defaultThreads()} threads), tfjs ${TFJS_VERSION} cpu for losses`;
}

let selected: EngineInfo | undefined;

/** Select and initialise the engine (once per process; later calls must ask for the same one). */
export function selectEngine(choice: BackendChoice = 'auto'): EngineInfo {
  if (selected) return selected;
  let info: EngineInfo;
  switch (choice) {
    case 'tensorflow-gpu': {
      const r = tryTfjsNode('@tensorflow/tfjs-node-gpu');
      if (!r.ok) throw new UserError(r.why === 'not installed' ? installHint('@tensorflow/tfjs-node-gpu') : `@tensorflow/tfjs-node-gpu failed to load: ${r.why}`);
      if (!r.gpu) throw new UserError('@tensorflow/tfjs-node-gpu loaded but sees no GPU (check CUDA and cuDNN)');
      info = { kind: 'tensorflow', tfBackend: 'tensorflow', gpu: true, description: `tensorflow: tfjs-node-gpu ${TFJS_VERSION} (GPU)` };
      break;
    }
    case 'tensorflow': {
      const r = tryTfjsNode('@tensorflow/tfjs-node');
      if (!r.ok) throw new UserError(r.why === 'not installed' ? installHint('@tensorflow/tfjs-node') : `@tensorflow/tfjs-node failed to load: ${r.why}`);
      info = { kind: 'tensorflow', tfBackend: 'tensorflow', gpu: r.gpu, description: `tensorflow: tfjs-node ${TFJS_VERSION} (${r.gpu ? 'GPU' : 'CPU'})` };
      break;
    }
    case 'ort':
      if (!syncOrtAvailable()) throw new UserError('the ort engine needs onnxruntime-node\'s native binding, which did not load (reinstall onnxruntime-node)');
      tf.setBackend('cpu');
      info = { kind: 'ort', tfBackend: 'cpu', gpu: false, description: ortDescription() };
      break;
    case 'cpu':
      tf.setBackend('cpu');
      info = { kind: 'cpu', tfBackend: 'cpu', gpu: false, description: `cpu: tfjs ${TFJS_VERSION} pure-JS cpu backend (slow; for reference)` };
      break;
    case 'wasm':
      throw new UserError('--backend wasm is not offered: the tfjs wasm backend has no Conv2DBackpropFilter kernel and slow backward kernels; --backend ort is the fast CPU engine');
    case 'auto': {
      const gpu = tryTfjsNode('@tensorflow/tfjs-node-gpu');
      if (gpu.ok && gpu.gpu) {
        info = { kind: 'tensorflow', tfBackend: 'tensorflow', gpu: true, description: `tensorflow: tfjs-node-gpu ${TFJS_VERSION} (GPU)` };
        break;
      }
      const cpu = tryTfjsNode('@tensorflow/tfjs-node');
      if (cpu.ok) {
        info = { kind: 'tensorflow', tfBackend: 'tensorflow', gpu: cpu.gpu, description: `tensorflow: tfjs-node ${TFJS_VERSION} (${cpu.gpu ? 'GPU' : 'CPU'})` };
        break;
      }
      if (syncOrtAvailable()) {
        tf.setBackend('cpu');
        info = { kind: 'ort', tfBackend: 'cpu', gpu: false, description: ortDescription() };
        break;
      }
      tf.setBackend('cpu');
      info = { kind: 'cpu', tfBackend: 'cpu', gpu: false, description: `cpu: tfjs ${TFJS_VERSION} pure-JS cpu backend` };
      break;
    }
    default:
      throw new UserError(`unknown --backend '${choice as string}' (use ${BACKENDS.join('|')})`);
  }
  quietBackend();
  selected = info;
  return info;
}

/** The engine selected so far (the cpu reference if none was). */
export function currentEngine(): EngineInfo {
  return selected ?? selectEngine('cpu');
}
