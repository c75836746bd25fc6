// onnxruntime-node sessions: the reference runtime that verdicts are based on.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as ort from 'onnxruntime-node';
import { encodeModel, type OnnxModel } from '../onnx/model.js';
import { toSparseInitializers } from '../onnx/sparse.js';
import { UserError } from '../util/errors.js';
import { floatToHalf, halfToFloat } from '../onnx/tensor.js';
import { defaultThreads } from '../util/threads.js';

export type Provider = 'cpu' | 'cuda';

export interface OrtSession {
  session: ort.InferenceSession;
  provider: Provider;
  inputNames: readonly string[];
  outputNames: readonly string[];
}

/** Providers onnxruntime-node was built with and can load here. */
export function availableProviders(): string[] {
  try {
    return (ort as unknown as { listSupportedBackends?: () => { name: string }[] }).listSupportedBackends?.().map((b) => b.name) ?? ['cpu'];
  } catch {
    return ['cpu'];
  }
}

/**
 * Whether onnxruntime-node's CUDA provider library is installed (the default install skips it; asking a
 * session for CUDA without it makes the native library print errors before failing).
 */
export function cudaInstalled(): boolean {
  try {
    const dist = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node'));
    return fs.existsSync(path.join(dist, '..', 'bin', 'napi-v6', process.platform, process.arch, process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so'));
  } catch {
    return false;
  }
}

export const CUDA_HINT = 'add onnxruntime-node\'s CUDA 12 libraries: (cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 node script/install), or use --provider cpu';

export async function createSession(model: OnnxModel | Uint8Array | string, opts: { provider?: Provider; threads?: number; spin?: boolean } = {}): Promise<OrtSession> {
  const provider = opts.provider ?? 'cpu';
  if (provider === 'cuda' && !(availableProviders().includes('cuda') && cudaInstalled())) throw new UserError(`onnxruntime-node's CUDA provider is not installed; ${CUDA_HINT}`);
  const src = typeof model === 'string' ? model : model instanceof Uint8Array ? model : encodeModel(model);
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [provider],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads || defaultThreads(),
    logSeverityLevel: 3,
    // idle pool threads spin by default (fastest for back-to-back runs); off when another thread needs the core
    extra: { session: { intra_op: { allow_spinning: opts.spin === false ? '0' : '1' } } },
  };
  let session: ort.InferenceSession;
  try {
    session = typeof src === 'string' ? await ort.InferenceSession.create(src, options) : await ort.InferenceSession.create(src, options);
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0]!;
    if (provider === 'cuda') {
      throw new UserError(`onnxruntime-node cannot use CUDA here (${msg}); ${CUDA_HINT}`);
    }
    throw new UserError(`onnxruntime-node cannot load the model: ${msg}`);
  }
  return { session, provider, inputNames: session.inputNames, outputNames: session.outputNames };
}

/** Run with float32 input(s); returns float32 outputs in output order. */
export async function runSession(s: OrtSession, inputs: { data: Float32Array; shape: number[] }[]): Promise<{ data: Float32Array; shape: number[] }[]> {
  const feeds: Record<string, ort.Tensor> = {};
  const meta = s.session.inputMetadata as readonly { type?: string }[];
  s.inputNames.forEach((n, i) => {
    const x = inputs[i]!;
    // models with float64/float16 inputs get their own element type (float16 as IEEE half bits)
    const type = meta[i]?.type;
    if (type === 'float64') feeds[n] = new ort.Tensor('float64', Float64Array.from(x.data), x.shape);
    else if (type === 'float16') feeds[n] = new ort.Tensor('float16', Uint16Array.from(x.data, floatToHalf), x.shape);
    else feeds[n] = new ort.Tensor('float32', x.data, x.shape);
  });
  const res = await s.session.run(feeds);
  return s.outputNames.map((n) => {
    const t = res[n]!;
    let data: Float32Array;
    if (t.type === 'float16') data = Float32Array.from(t.data as Uint16Array, halfToFloat);
    else if (t.data instanceof Float32Array) data = t.data;
    else data = Float32Array.from(t.data as ArrayLike<number>, Number);
    return { data, shape: [...t.dims] };
  });
}

/** `model` with the named initializers stored sparsely, kept only when onnxruntime-node loads the result. */
export async function toSparseIfLoadable(model: OnnxModel, names: string[]): Promise<{ ok: true; model: OnnxModel } | { ok: false; why: string }> {
  const out = toSparseInitializers(model, names);
  try {
    const s = await createSession(out);
    await s.session.release();
  } catch (e) {
    return { ok: false, why: (e as Error).message.split('\n')[0]! };
  }
  return { ok: true, model: out };
}

/**
 * Both models run by onnxruntime on the same input: the largest |difference| of their first outputs and the
 * largest |output| of the first (the scale a tolerance is relative to). The output shapes must agree.
 */
export async function outputDifference(a: OnnxModel | Uint8Array | string, b: OnnxModel | Uint8Array | string, input: { data: Float32Array; shape: number[] }): Promise<{ diff: number; scale: number }> {
  const [sa, sb] = [await createSession(a), await createSession(b)];
  try {
    const [ya] = await runSession(sa, [input]);
    const [yb] = await runSession(sb, [input]);
    if (ya!.shape.join() !== yb!.shape.join()) throw new Error(`outputs of shapes [${ya!.shape}] and [${yb!.shape}] differ`);
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < ya!.data.length; i++) {
      diff = Math.max(diff, Math.abs(ya!.data[i]! - yb!.data[i]!));
      scale = Math.max(scale, Math.abs(ya!.data[i]!));
    }
    return { diff, scale };
  } finally {
    await sa.session.release();
    await sb.session.release();
  }
}
