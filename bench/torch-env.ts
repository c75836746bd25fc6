// The environment the benches run PyTorch in: glibc's malloc told to keep freed memory (no mmap threshold,
// no trim). On these VMs a page touched for the first time costs so much that PyTorch, whose tensors are
// freed and allocated again every call, runs several-fold slower in about half of its processes: glibc
// hands freed memory back to the kernel (unmapping large blocks, trimming the heap's top) and the next call
// touches fresh pages, depending on its dynamic thresholds (measured on a 2-vCPU AMD EPYC, one thread, the
// small CNN's forward: 6,400-9,600 img/s in 6 of 10 processes and 86,000-99,000 in 4; 78,000-95,000 in 5 of
// 5 with both settings; 3,300-9,400 in 8 of 8 with either alone). onnx-hydra runs the same with or
// without them (ResNet-18 natural step 176-191 ms either way), so PyTorch gets its best configuration.
// A GLIBC_TUNABLES set by the caller is kept.
export const TORCH_MALLOC = 'glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296';

export function torchEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { ...process.env, GLIBC_TUNABLES: process.env.GLIBC_TUNABLES ?? TORCH_MALLOC, ...extra };
}

/** How PyTorch's allocations were set up, for the reports. */
export function torchMallocNote(): string {
  return process.env.GLIBC_TUNABLES ? `GLIBC_TUNABLES=${process.env.GLIBC_TUNABLES} (the caller's)` : 'glibc malloc keeps freed memory (bench/torch-env.ts)';
}
