// 64-byte aligned copies of float arrays. onnxruntime's blocked (NCHWc) convolutions read a filter fed as an
// input ~20% slower when it is not 64-byte aligned (6 convolutions 256x256x3x3 on [128,256,2,2]: 29-35 ms at
// three offsets, 24.5-25.3 ms at the aligned one, as with a constant filter; measured), and JavaScript's
// large ArrayBuffers come from malloc, 16 bytes past a page. A WebAssembly memory starts on a page.
// Hand-written: no library allocates aligned ArrayBuffers.

const ALIGN = 64;
const PAGE = 65536;
/** a WebAssembly memory holds at most 4 GiB (65536 pages) */
const MAX_BYTES = 65536 * PAGE;
/** released memories kept for reuse: fresh pages fault on first touch (~10 ms per 45 MB) */
const pool: WebAssembly.Memory[] = [];
const POOL_SIZE = 4;

/**
 * Copies of `arrays` at 64-byte aligned addresses in one WebAssembly memory (never grown while in use, so the
 * views stay valid; the arrays themselves when they do not fit in one). `release` hands the memory back for
 * reuse: the copies must not be read after it.
 */
export function alignedCopies(arrays: Float32Array[]): { copies: Float32Array[]; release: () => void } {
  const offsets: number[] = [];
  let bytes = 0;
  for (const a of arrays) {
    offsets.push(bytes);
    bytes += Math.ceil(a.byteLength / ALIGN) * ALIGN;
  }
  if (!bytes || bytes > MAX_BYTES) return { copies: arrays, release: () => {} };
  let at = -1;
  pool.forEach((m, i) => {
    if (m.buffer.byteLength >= bytes && (at < 0 || m.buffer.byteLength < pool[at]!.buffer.byteLength)) at = i;
  });
  let memory: WebAssembly.Memory;
  try {
    memory = at >= 0 ? pool.splice(at, 1)[0]! : new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) });
  } catch {
    // no memory to be had (each reserves address space): unaligned is slower, not wrong
    return { copies: arrays, release: () => {} };
  }
  const copies = arrays.map((a, i) => {
    const copy = new Float32Array(memory.buffer, offsets[i], a.length);
    copy.set(a);
    return copy;
  });
  let released = false;
  return {
    copies,
    release: () => {
      if (released) return;
      released = true;
      pool.push(memory);
      if (pool.length > POOL_SIZE) pool.sort((p, q) => q.buffer.byteLength - p.buffer.byteLength).pop();
    },
  };
}
