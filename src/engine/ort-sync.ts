// Synchronous onnxruntime-node sessions, for use inside tfjs ops (which must be synchronous).
// onnxruntime-node's public `run` is async only because it defers the native call with setImmediate;
// its native binding's `run` is synchronous. We call the binding directly (pinned onnxruntime-node
// version; `available()` is false if a future layout hides it, and the engine is then not offered).
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { GraphBuilder } from '../onnx/builder.js';
import { defaultThreads } from '../util/threads.js';

const require = createRequire(import.meta.url);

interface NativeSession {
  loadModel(buf: ArrayBufferLike, offset: number, length: number, options: object): void;
  run(feeds: Record<string, unknown>, fetches: Record<string, null>, options: object): Record<string, { data: ArrayBufferView; dims: readonly number[]; type: string }>;
  dispose?(): void;
  inputMetadata: { name: string }[];
  outputMetadata: { name: string }[];
}
interface Binding {
  binding: { InferenceSession: new () => NativeSession };
  initOrt(): void;
}
type TensorCtor = new (type: string, data: ArrayBufferView, dims: readonly number[]) => unknown;

let cached: { b: Binding; Tensor: TensorCtor } | null | undefined;

function load(): { b: Binding; Tensor: TensorCtor } | null {
  if (cached !== undefined) return cached;
  try {
    const b = require('onnxruntime-node/dist/binding') as Binding;
    const Tensor = (require('onnxruntime-node') as { Tensor: TensorCtor }).Tensor;
    b.initOrt();
    if (typeof b.binding?.InferenceSession !== 'function') throw new Error('no InferenceSession in the binding');
    cached = { b, Tensor };
  } catch {
    cached = null;
  }
  return cached;
}

export function syncOrtAvailable(): boolean {
  return load() !== null;
}

export interface SyncSessionOptions {
  /** intra-op threads (0 or unset: one per physical core, see util/threads.ts) */
  threads?: number;
  /** onnxruntime graph optimizations ('all' unless debugging) */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** write an onnxruntime profile (JSON trace) with this file prefix */
  profile?: string;
  /** false: pool threads never spin (by default they spin during a run and stop when it returns) */
  spin?: boolean;
}

export interface OrtOut {
  data: Float32Array | BigInt64Array | Int32Array | Uint8Array;
  shape: number[];
}

// HYDRA_ORT_PROFILE=<prefix>: every session writes an onnxruntime profile (flushed by flushProfiles())
const PROFILE = process.env.HYDRA_ORT_PROFILE;
/** debugging: HYDRA_ORT_DUMP=prefix writes each session's model to prefix-N.onnx */
const DUMP = process.env.HYDRA_ORT_DUMP;
let dumpCount = 0;
const profiled: SyncSession[] = [];
let profileCount = 0;
export function flushProfiles(): void {
  for (const s of profiled.splice(0)) s.endProfiling();
}

export class SyncSession {
  private readonly s: NativeSession;
  private readonly Tensor: TensorCtor;
  readonly inputNames: string[];
  readonly outputNames: string[];

  constructor(model: Uint8Array, opts: SyncSessionOptions = {}) {
    const l = load();
    if (!l) throw new Error('the onnxruntime-node native binding is not available');
    this.Tensor = l.Tensor;
    this.s = new l.b.binding.InferenceSession();
    if (DUMP) writeFileSync(`${DUMP}-${dumpCount++}.onnx`, model);
    if (PROFILE && !opts.profile && opts.optimization !== 'disabled') opts = { ...opts, profile: `${PROFILE}-${profileCount++}` };
    this.s.loadModel(model.buffer, model.byteOffset, model.byteLength, {
      executionProviders: [{ name: 'cpu' }],
      intraOpNumThreads: opts.threads || defaultThreads(),
      interOpNumThreads: 1,
      graphOptimizationLevel: opts.optimization ?? (process.env.HYDRA_ORT_OPT as SyncSessionOptions['optimization']) ?? 'all',
      logSeverityLevel: 3,
      // pool threads spin between the kernels of a run (a sleeping thread takes a wake-up per kernel) and stop
      // when it returns: several sessions are alive at once (forward, backward, attack), and a thread left
      // spinning steals a core from the next session's run (TRADES-10 on the small CNN: 114 ms a step with
      // spinning left on, 49 with none; see the README's engine notes for the numbers with this setting)
      extra: { session: { intra_op: { allow_spinning: process.env.HYDRA_ORT_SPIN ?? (opts.spin === false ? '0' : '1') }, inter_op: { allow_spinning: '0' }, force_spinning_stop: '1' } },
      ...(opts.profile ? { enableProfiling: true, profileFilePrefix: opts.profile } : {}),
    });
    if (opts.profile) profiled.push(this);
    this.inputNames = this.s.inputMetadata.map((m) => m.name);
    this.outputNames = this.s.outputMetadata.map((m) => m.name);
  }

  /** Run with float32/int64 feeds; returns the requested outputs (all by default) in order. */
  run(feeds: Record<string, { data: Float32Array | BigInt64Array | Int32Array | Uint8Array; shape: readonly number[] }>, outputs: string[] = this.outputNames): OrtOut[] {
    const f: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(feeds)) {
      const type = v.data instanceof Float32Array ? 'float32' : v.data instanceof BigInt64Array ? 'int64' : v.data instanceof Int32Array ? 'int32' : 'bool';
      f[k] = new this.Tensor(type, v.data, v.shape);
    }
    const fetches: Record<string, null> = {};
    for (const o of outputs) fetches[o] = null;
    const r = this.s.run(f, fetches, {});
    return outputs.map((o) => ({ data: r[o]!.data as OrtOut['data'], shape: [...r[o]!.dims] }));
  }

  endProfiling(): void {
    (this.s as unknown as { endProfiling(): void }).endProfiling();
  }

  dispose(): void {
    const i = profiled.indexOf(this);
    if (i >= 0) {
      profiled.splice(i, 1);
      this.endProfiling();
    }
    this.s.dispose?.();
  }
}

/** onnxruntime's operator domain of its blocked-layout (NCHWc) kernels */
export const NCHWC_DOMAIN = 'com.microsoft.nchwc';

let blockSize: number | undefined;
/**
 * The channel block of onnxruntime's NCHWc kernels on this CPU (16 with AVX-512, 8 with AVX2), read off the
 * channel count ReorderInput pads four channels to (it wants a multiple of 4); 0 when they are not available
 * (other CPUs, other builds) or HYDRA_NCHWC=0.
 */
export function nchwcBlockSize(): number {
  if (blockSize !== undefined) return blockSize;
  blockSize = 0;
  if (process.env.HYDRA_NCHWC === '0' || !syncOrtAvailable()) return blockSize;
  const b = new GraphBuilder(18, 'probe');
  b.input('x', 'float32', [1, 4, 1, 1]);
  b.add('ReorderInput', ['x'], { channels_last: 0 }, ['y'], NCHWC_DOMAIN);
  b.output('y');
  try {
    const s = new SyncSession(b.toModel({ untypedOutputs: true }), { threads: 1, optimization: 'disabled' });
    const [y] = s.run({ x: { data: new Float32Array(4), shape: [1, 4, 1, 1] } });
    s.dispose();
    const c = y!.shape[1]!;
    if (c > 1 && (c & (c - 1)) === 0) blockSize = c;
  } catch {
    // no NCHWc kernels in this onnxruntime build or on this CPU
  }
  return blockSize;
}
