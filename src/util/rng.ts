// Seeded random numbers. xoshiro128** (Blackman & Vigna), hand-written because seedrandom's generators
// cost ~47 ns per number and adversarial training draws millions per epoch; seedrandom still turns the
// seed string into the initial state. The state is four 32-bit words, saved in checkpoints.
import seedrandom from 'seedrandom';
import { wasmInstance } from './wasm.js';

export interface Rng {
  /** uniform in [0, 1) */
  (): number;
  /** standard normal */
  normal(): number;
  /** 32 random bits as a signed integer (the same stream as `()`) */
  int32(): number;
  state(): number[];
}

/**
 * The xoshiro128** step over a state held in closure locals (int32): an order of magnitude faster than a
 * typed-array state. `next` returns 32 random bits as a signed integer.
 */
function xoshiro128ss(a: number, b: number, c: number, d: number): { next(): number; state(): number[] } {
  if (!(a | b | c | d)) a = 1;
  return {
    next: () => {
      const r = Math.imul(rotl(Math.imul(b, 5), 7), 9);
      const t = b << 9;
      c ^= a;
      d ^= b;
      b ^= c;
      a ^= d;
      c ^= t;
      d = rotl(d, 11);
      return r | 0;
    },
    state: () => [a, b, c, d],
  };
}

export function makeRng(seed: string | number, state?: number[]): Rng {
  let init: number[];
  if (state && state.length === 4) init = state;
  else {
    const s = seedrandom(String(seed));
    init = [0, 0, 0, 0].map(() => Math.floor(s() * 2 ** 32) | 0);
  }
  const x = xoshiro128ss(init[0]!, init[1]!, init[2]!, init[3]!);
  const step = x.next;
  const next = (): number => (step() >>> 0) / 4294967296;
  let spare = NaN;
  const rng = next as Rng;
  rng.normal = () => {
    if (spare === spare) {
      const v = spare;
      spare = NaN;
      return v;
    }
    // Marsaglia's polar method: no trigonometric functions
    let u: number;
    let v: number;
    let q: number;
    do {
      u = 2 * next() - 1;
      v = 2 * next() - 1;
      q = u * u + v * v;
    } while (q >= 1 || q === 0);
    const f = Math.sqrt((-2 * Math.log(q)) / q);
    spare = v * f;
    return u * f;
  };
  rng.int32 = step;
  rng.state = x.state;
  return rng;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, rng: () => number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/**
 * out[i] = base[i % base.length] + sigma · N(0, 1) for i < out.length: Gaussian noise by the ziggurat method in
 * WebAssembly SIMD (src/util/wasm/gauss.as.ts, ~2 ns per normal; the JS ziggurat took 7.5 ns).
 */
export function addGaussian(rng: Rng, base: Float32Array, sigma: number, out: Float32Array): void {
  // a generator of its own, seeded from the caller's stream
  addGaussianSeeded(noiseSeed(rng), base, sigma, out);
}

/** The four 32-bit words that seed one addGaussian call. */
export function noiseSeed(rng: Rng): [number, number, number, number] {
  return [rng.int32(), rng.int32(), rng.int32(), rng.int32()];
}

/** The compiled noise kernel (src/util/wasm/gauss.as.ts), instantiated once per thread on first use. */
interface GaussKernel {
  memory: WebAssembly.Memory;
  seed(a: number, b: number, c: number, d: number): void;
  fill(out: number, n: number, base: number, per: number, j0: number, sigma: number, fix: number): void;
  scratch(bytes: number): number;
}
let kernel: GaussKernel | undefined;
function gaussKernel(): GaussKernel {
  return (kernel ??= wasmInstance<GaussKernel>('gauss.wasm'));
}

/** normals per kernel call (a multiple of 16, so the stream does not depend on the chunking) */
const CHUNK = 16384;

/** addGaussian with an explicit seed (the same seed gives the same noise in any thread). */
export function addGaussianSeeded(seed: readonly number[], base: Float32Array, sigma: number, out: Float32Array): void {
  const k = gaussKernel();
  const per = base.length;
  // layout: [chunk of normals (+16 spare)] [base image] [rejected candidates, 12 bytes per normal]
  const ptr = k.scratch(4 * (CHUNK + 16) + 4 * per + 12 * CHUNK);
  if (!ptr) throw new Error(`cannot grow WebAssembly memory for ${per} values per image`);
  const basePtr = ptr + 4 * (CHUNK + 16);
  const fixPtr = basePtr + 4 * per;
  new Float32Array(k.memory.buffer, basePtr, per).set(base);
  k.seed(seed[0]! | 0, seed[1]! | 0, seed[2]! | 0, seed[3]! | 0);
  const chunk = new Float32Array(k.memory.buffer, ptr, CHUNK);
  for (let s = 0; s < out.length; s += CHUNK) {
    const n = Math.min(CHUNK, out.length - s);
    k.fill(ptr, n, basePtr, per, s % per, sigma, fixPtr);
    out.set(n === CHUNK ? chunk : chunk.subarray(0, n), s);
  }
}
