// Seeded random numbers. xoshiro128** (Blackman & Vigna), hand-written because seedrandom's generators
// cost ~47 ns per number and adversarial training draws millions per epoch; seedrandom still turns the
// seed string into the initial state. The state is four 32-bit words, saved in checkpoints.
import seedrandom from 'seedrandom';

export interface Rng {
  /** uniform in [0, 1) */
  (): number;
  /** standard normal */
  normal(): number;
  state(): number[];
}

export function makeRng(seed: string | number, state?: number[]): Rng {
  let a: number, b: number, c: number, d: number;
  if (state && state.length === 4) [a, b, c, d] = state as [number, number, number, number];
  else {
    const init = seedrandom(String(seed));
    [a, b, c, d] = [0, 0, 0, 0].map(() => Math.floor(init() * 2 ** 32) | 0) as [number, number, number, number];
    if (!(a | b | c | d)) a = 1;
  }
  // state in closure locals (int32): an order of magnitude faster than a typed-array state
  const next = (): number => {
    const r = Math.imul(rotl(Math.imul(b, 5), 7), 9);
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return (r >>> 0) / 4294967296;
  };
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
  rng.state = () => [a, b, c, d];
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
