// 64-byte aligned copies of float arrays. onnxruntime's blocked (NCHWc) convolutions read a filter fed as an
// input ~20% slower when it is not 64-byte aligned (6 convolutions 256x256x3x3 on [128,256,2,2]: 29-35 ms at
// three offsets, 24.5-25.3 ms at the aligned one, as with a constant filter; measured), and JavaScript's
// large ArrayBuffers come from malloc, 16 bytes past a page. A WebAssembly memory starts on a page.
// Hand-written: no library allocates aligned ArrayBuffers.

const ALIGN = 64;
const PAGE = 65536;
/** a WebAssembly memory holds at most 4 GiB (65536 pages) */
const MAX_BYTES = 65536 * PAGE;

/** Copies of `arrays` at 64-byte aligned addresses in one fresh WebAssembly memory (never grown, so the views stay valid); the arrays themselves when they do not fit in one. */
export function alignedCopies(arrays: Float32Array[]): Float32Array[] {
  const offsets: number[] = [];
  let bytes = 0;
  for (const a of arrays) {
    offsets.push(bytes);
    bytes += Math.ceil(a.byteLength / ALIGN) * ALIGN;
  }
  if (!bytes || bytes > MAX_BYTES) return arrays;
  const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) });
  return arrays.map((a, i) => {
    const copy = new Float32Array(memory.buffer, offsets[i], a.length);
    copy.set(a);
    return copy;
  });
}
