// Gaussian noise for randomized smoothing, in WebAssembly with 128-bit SIMD (AssemblyScript, compiled to
// dist/src/util/gauss.wasm by `npm run build`). Hand-written because smoothing draws ~10^7 normals per
// certified image and no maintained JS/wasm library fills seeded normals at this rate: four xoshiro128**
// generators run side by side in the SIMD lanes; the ziggurat (Marsaglia & Tsang 2000, 128 layers, layer
// index from separate bits as Doornik recommends) accepts four candidates at once with one integer compare
// (~97.2% per lane, measured); rejected lanes finish in scalar code with a fifth xoshiro128** generator.
// The result is exact up to float32 rounding of the candidate (the output is float32).

const R: f64 = 3.442619855899;
const KW = memory.data(128 * 8, 16); // per layer u32 ZK[i] (accept |hz| < ZK[i]) and f32 ZW[i] (x = hz · ZW[i])
const ZW64 = memory.data(128 * 8, 16);
const ZF = memory.data(128 * 8, 16);

// lane generators (state words a, b, c, d of lane l are ST[l], ST[4+l], ST[8+l], ST[12+l]) and the scalar one
const ST = memory.data(16 * 4, 16);
let qa: u32 = 1;
let qb: u32 = 0;
let qc: u32 = 0;
let qd: u32 = 0;

function buildTables(): void {
  const m1: f64 = 2147483648.0;
  let dn: f64 = R;
  let tn: f64 = dn;
  const vn: f64 = 9.91256303526217e-3;
  const q: f64 = vn / Math.exp(-0.5 * dn * dn);
  store<u32>(KW, <u32>((dn / q) * m1));
  store<u32>(KW + 8, 0);
  store<f64>(ZW64, q / m1);
  store<f64>(ZW64 + 127 * 8, dn / m1);
  store<f64>(ZF, 1.0);
  store<f64>(ZF + 127 * 8, Math.exp(-0.5 * dn * dn));
  for (let i = 126; i >= 1; i--) {
    dn = Math.sqrt(-2.0 * Math.log(vn / dn + Math.exp(-0.5 * dn * dn)));
    store<u32>(KW + ((i + 1) << 3), <u32>((dn / tn) * m1));
    tn = dn;
    store<f64>(ZF + (i << 3), Math.exp(-0.5 * dn * dn));
    store<f64>(ZW64 + (i << 3), dn / m1);
  }
  for (let i = 0; i < 128; i++) store<f32>(KW + (i << 3), <f32>load<f64>(ZW64 + (i << 3)), 4);
}
buildTables();

// scalar xoshiro128** (the slow path's generator)
function qnext(): u32 {
  const r = rotl<u32>(qb * 5, 7) * 9;
  const t = qb << 9;
  qc ^= qa;
  qd ^= qb;
  qb ^= qc;
  qa ^= qd;
  qc ^= t;
  qd = rotl<u32>(qd, 11);
  return r;
}

function quni(): f64 {
  return <f64>qnext() / 4294967296.0;
}

/** Seed all five generators from four words (the lanes' states are the scalar generator's first 16 outputs). */
export function seed(a: u32, b: u32, c: u32, d: u32): void {
  qa = a; qb = b; qc = c; qd = d;
  if ((qa | qb | qc | qd) == 0) qa = 1;
  for (let i = 0; i < 16; i++) store<u32>(ST + (i << 2), qnext());
  for (let l = 0; l < 4; l++) {
    const p = ST + (l << 2);
    if ((load<u32>(p) | load<u32>(p, 16) | load<u32>(p, 32) | load<u32>(p, 48)) == 0) store<u32>(p, 1);
  }
}

/** A candidate (hz, iz) the fast test rejected: the ziggurat's wedge and tail, then fresh scalar draws. */
function slow(hz: i32, iz: i32): f32 {
  for (;;) {
    const x: f64 = <f64>hz * load<f64>(ZW64 + (iz << 3));
    if (iz == 0) {
      let t: f64;
      let y: f64;
      do {
        t = -Math.log(1.0 - quni()) / R;
        y = -Math.log(1.0 - quni());
      } while (y + y < t * t);
      return <f32>(hz > 0 ? R + t : -R - t);
    }
    const f1 = load<f64>(ZF + (iz << 3));
    const f0 = load<f64>(ZF + ((iz - 1) << 3));
    if (f1 + quni() * (f0 - f1) < Math.exp(-0.5 * x * x)) return <f32>x;
    iz = <i32>(qnext() & 127);
    hz = <i32>qnext();
    if (<u32>abs<i32>(hz) < load<u32>(KW + (iz << 3))) return <f32>(<f64>hz * load<f64>(ZW64 + (iz << 3)));
  }
  return 0; // not reached
}

/**
 * out[i] = base[(j0 + i) % per] + sigma · N(0, 1) for i < n, continuing the stream set by seed(). Normals are
 * made 16 at a time: out must have room for n rounded up to 16, and the stream stays the same however a fill
 * is split into calls as long as every call but the last has n a multiple of 16. `fix` is room for 12 bytes per
 * normal (the candidates the fast test rejected, ~2.8% of them, wait there).
 */
export function fill(out: usize, n: i32, base: usize, per: i32, j0: i32, sigma: f32, fix: usize): void {
  let f = fix;
  let a = v128.load(ST);
  let b = v128.load(ST, 16);
  let c = v128.load(ST, 32);
  let d = v128.load(ST, 48);
  const five = i32x4.splat(5);
  const nine = i32x4.splat(9);
  const m127 = i32x4.splat(127);
  const sg = f32x4.splat(sigma);
  for (let i = 0; i < n; i += 16) {
    // layer indices for 16 normals: byte k of each lane's word
    let bits = i32x4.mul(v128.or(i32x4.shl(i32x4.mul(b, five), 7), i32x4.shr_u(i32x4.mul(b, five), 25)), nine);
    let t = i32x4.shl(b, 9);
    c = v128.xor(c, a); d = v128.xor(d, b); b = v128.xor(b, c); a = v128.xor(a, d); c = v128.xor(c, t);
    d = v128.or(i32x4.shl(d, 11), i32x4.shr_u(d, 21));
    for (let k = 0; k < 4; k++) {
      const hz = i32x4.mul(v128.or(i32x4.shl(i32x4.mul(b, five), 7), i32x4.shr_u(i32x4.mul(b, five), 25)), nine);
      t = i32x4.shl(b, 9);
      c = v128.xor(c, a); d = v128.xor(d, b); b = v128.xor(b, c); a = v128.xor(a, d); c = v128.xor(c, t);
      d = v128.or(i32x4.shl(d, 11), i32x4.shr_u(d, 21));
      const iz = v128.and(bits, m127);
      bits = i32x4.shr_u(bits, 8);
      const i0 = i32x4.extract_lane(iz, 0);
      const i1 = i32x4.extract_lane(iz, 1);
      const i2 = i32x4.extract_lane(iz, 2);
      const i3 = i32x4.extract_lane(iz, 3);
      // (ZK, ZW) pairs of the four layers, 8 bytes each, then split into a ZK and a ZW vector
      const p01 = v128.load64_lane(KW + (<usize>i1 << 3), v128.load64_zero(KW + (<usize>i0 << 3)), 1);
      const p23 = v128.load64_lane(KW + (<usize>i3 << 3), v128.load64_zero(KW + (<usize>i2 << 3)), 1);
      const zk = v128.shuffle<i32>(p01, p23, 0, 2, 4, 6);
      const zw = v128.shuffle<i32>(p01, p23, 1, 3, 5, 7);
      const x = f32x4.mul(f32x4.convert_i32x4_s(hz), zw);
      const ok = i32x4.lt_u(i32x4.abs(hz), zk);
      const mask = i32x4.bitmask(ok);
      if (mask != 15) {
        // rejected lanes are finished after the loop (a call in this loop would make V8 spill the state)
        const at = i + (k << 2);
        if ((mask & 1) == 0) { store<i32>(f, at); store<i32>(f, i32x4.extract_lane(hz, 0), 4); store<i32>(f, i0, 8); f += 12; }
        if ((mask & 2) == 0) { store<i32>(f, at + 1); store<i32>(f, i32x4.extract_lane(hz, 1), 4); store<i32>(f, i1, 8); f += 12; }
        if ((mask & 4) == 0) { store<i32>(f, at + 2); store<i32>(f, i32x4.extract_lane(hz, 2), 4); store<i32>(f, i2, 8); f += 12; }
        if ((mask & 8) == 0) { store<i32>(f, at + 3); store<i32>(f, i32x4.extract_lane(hz, 3), 4); store<i32>(f, i3, 8); f += 12; }
      }
      v128.store(out + ((<usize>(i + (k << 2))) << 2), f32x4.mul(x, sg));
    }
  }
  v128.store(ST, a);
  v128.store(ST, b, 16);
  v128.store(ST, c, 32);
  v128.store(ST, d, 48);
  for (let p = fix; p < f; p += 12) store<f32>(out + (<usize>load<i32>(p) << 2), sigma * slow(load<i32>(p, 4), load<i32>(p, 8)));
  // add the base image, one contiguous run of it at a time
  let i = 0;
  let j = j0;
  while (i < n) {
    const len = min(per - j, n - i);
    const o = out + (<usize>i << 2);
    const s = base + (<usize>j << 2);
    let k = 0;
    for (; k + 4 <= len; k += 4) {
      const p = o + (<usize>k << 2);
      v128.store(p, f32x4.add(v128.load(p), v128.load(s + (<usize>k << 2))));
    }
    for (; k < len; k++) {
      const p = o + (<usize>k << 2);
      store<f32>(p, load<f32>(p) + load<f32>(s + (<usize>k << 2)));
    }
    i += len;
    j = 0;
  }
}

/** A scratch area of at least `bytes` bytes past the static data (grows the memory when needed). */
export function scratch(bytes: usize): usize {
  const start = (__heap_base + 15) & ~<usize>15;
  const need = <i32>((start + bytes + 0xffff) >> 16);
  const have = memory.size();
  if (need > have && memory.grow(need - have) < 0) return 0;
  return start;
}
