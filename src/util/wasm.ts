// The WebAssembly kernels `npm run build` compiles from src/util/wasm/*.as.ts into dist/src/util/.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const modules = new Map<string, WebAssembly.Module>();

/** A compiled kernel by file name (e.g. 'gauss.wasm'), compiled once per thread. */
export function wasmModule(name: string): WebAssembly.Module {
  const hit = modules.get(name);
  if (hit) return hit;
  const file = new URL(`./${name}`, import.meta.url);
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = new Uint8Array(readFileSync(file));
  } catch {
    throw new Error(`${fileURLToPath(file)} is missing: run \`npm run build\` (it compiles src/util/wasm/${name.replace(/\.wasm$/, '.as.ts')})`);
  }
  const m = new WebAssembly.Module(bytes);
  modules.set(name, m);
  return m;
}

/** A new instance of a kernel (its own memory); `abort` (AssemblyScript's trap) throws. */
export function wasmInstance<T>(name: string): T {
  const abort = (): never => {
    throw new Error(`${name} aborted`);
  };
  return new WebAssembly.Instance(wasmModule(name), { env: { abort } }).exports as unknown as T;
}

/**
 * A new instance of a kernel with `bytes` of scratch memory for the caller's arrays, past the kernel's own
 * memory (`base` onwards in `buffer`). Throws a RangeError when the memory cannot grow that far (4 GiB).
 */
export function wasmWithScratch<T extends { memory: WebAssembly.Memory }>(name: string, bytes: number): { kernel: T; buffer: ArrayBuffer; base: number } {
  const kernel = wasmInstance<T>(name);
  const base = kernel.memory.buffer.byteLength;
  kernel.memory.grow(Math.ceil(bytes / 65536));
  return { kernel, buffer: kernel.memory.buffer, base };
}
