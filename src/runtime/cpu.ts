// The machine a timing was taken on: CPU model, logical cores, and the x86 vector extensions that decide
// how fast onnxruntime's kernels are (the flags line of /proc/cpuinfo; 'unknown' where there is none).
import fs from 'node:fs';
import os from 'node:os';

export interface CpuInfo {
  model: string;
  cores: number;
  isa: string[];
}

const ISA_FLAGS = ['avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_tile'];

export function cpuInfo(): CpuInfo {
  const cpus = os.cpus();
  let flags: string[] = [];
  try {
    flags = (/^flags\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(/\s+/);
  } catch {
    // not Linux: no flags to read
  }
  const isa = ISA_FLAGS.filter((f) => flags.includes(f));
  return { model: cpus[0]?.model.trim() ?? 'unknown', cores: cpus.length, isa: isa.length || flags.length > 1 ? isa : ['unknown'] };
}
