// `--isa avx2`: the benches on an AVX-512 machine, with both sides limited to AVX2 kernels, as on an
// AVX2-only CPU (the Zen 3 that #15's goals are judged on).
// - onnxruntime picks its kernels (MLAS, and its NCHWc channel block: 16 with AVX-512, 8 with AVX2) from the
//   XCR0 register, which tells which vector state the OS saves. We load a copy of libonnxruntime.so.1 whose
//   `xgetbv` instructions are replaced by `push 7; pop rax` (x87, SSE and AVX state: no AVX-512), found
//   ahead of the package's own copy through LD_LIBRARY_PATH (the binding's RUNPATH is $ORIGIN).
//   Hand-written: no runtime switch limits MLAS's ISA, and the kernel's `clearcpuid=` needs a reboot.
// - PyTorch: oneDNN is limited by ONEDNN_MAX_CPU_ISA=AVX2 (its documented switch); ATen's own kernels
//   and Debian's OpenBLAS already run AVX2 code on these AMD machines (torch_bench.py reports both).
// The CPU's clock, caches and memory stay those of the machine: a proxy for an AVX2-only CPU, not one.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { packageRoot } from '../src/data/dataset.js';
import { nchwcBlockSize } from '../src/engine/ort-sync.js';
import { UserError } from '../src/util/errors.js';

export type IsaLimit = 'native' | 'avx2';

const XGETBV = Buffer.from([0x0f, 0x01, 0xd0]);
/** push 7; pop rax: the same 3 bytes' length, eax = XCR0 with only x87|SSE|AVX state set */
const NO_AVX512_XCR0 = Buffer.from([0x6a, 0x07, 0x58]);
const CHILD_MARK = 'HYDRA_BENCH_ISA';

function ortLibrary(): string {
  const require = createRequire(import.meta.url);
  const binDir = path.join(path.dirname(require.resolve('onnxruntime-node/package.json')), 'bin');
  for (const napi of fs.readdirSync(binDir).sort().reverse()) {
    const lib = path.join(binDir, napi, 'linux', 'x64', 'libonnxruntime.so.1');
    if (fs.existsSync(lib)) return lib;
  }
  throw new UserError(`--isa avx2: no linux/x64 libonnxruntime.so.1 under ${binDir}`);
}

/** Whether objdump, disassembling from `from`, puts an xgetbv instruction at `at` (an instruction boundary). */
function xgetbvAt(lib: string, at: number, from: number): boolean {
  const listing = execFileSync('objdump', ['-d', '--no-show-raw-insn', `--start-address=${from}`, `--stop-address=${at + 3}`, lib], { encoding: 'utf8', maxBuffer: 1 << 24 });
  return new RegExp(`^\\s*${at.toString(16)}:\\s+xgetbv\\b`, 'm').test(listing);
}

/** File offsets of the library's xgetbv instructions: byte matches that objdump decodes as one from two starting points. */
function xgetbvSites(lib: string, bytes: Buffer): number[] {
  // the text segment's file offsets equal its addresses in onnxruntime's builds; checked, since objdump takes addresses
  const loads = execFileSync('readelf', ['-lW', lib], { encoding: 'utf8' }).split('\n').filter((l) => /^\s*LOAD\s/.test(l) && /R E/.test(l));
  const text = loads.map((l) => l.trim().split(/\s+/)).map((f) => ({ offset: Number(f[1]), vaddr: Number(f[2]), size: Number(f[4]) }))[0];
  if (!text || text.offset !== text.vaddr) throw new UserError(`--isa avx2: ${lib}'s code segment is not at its file offset; cannot patch it`);
  const sites: number[] = [];
  for (let at = bytes.indexOf(XGETBV, text.offset); at >= 0 && at < text.offset + text.size; at = bytes.indexOf(XGETBV, at + 1)) {
    if (xgetbvAt(lib, at, at - 96) && xgetbvAt(lib, at, at - 41)) sites.push(at);
  }
  return sites;
}

/** A copy of onnxruntime's library that sees no AVX-512 state, made once per onnxruntime build (by its hash) under .cache/. */
export function avx2Library(): string {
  const lib = ortLibrary();
  const bytes = fs.readFileSync(lib);
  const dir = path.join(packageRoot(), '.cache', 'isa-avx2', createHash('sha256').update(bytes).digest('hex').slice(0, 16));
  const out = path.join(dir, 'libonnxruntime.so.1');
  if (fs.existsSync(out)) return dir;
  let sites: number[];
  try {
    sites = xgetbvSites(lib, bytes);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError('--isa avx2 needs objdump and readelf (apt-get install binutils)');
    throw e;
  }
  if (!sites.length) throw new UserError(`--isa avx2: found no xgetbv instruction in ${lib}`);
  for (const at of sites) NO_AVX512_XCR0.copy(bytes, at);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(`${out}.tmp`, bytes);
  fs.renameSync(`${out}.tmp`, out);
  process.stderr.write(`--isa avx2: ${out}: ${sites.length} xgetbv reads patched (at ${sites.map((s) => `0x${s.toString(16)}`).join(', ')})\n`);
  return dir;
}

/**
 * Runs this bench again in a child process limited to `isa` and exits with its status, unless `isa` is
 * native or this is that child. In the child, checks that onnxruntime took the limit.
 */
export function applyIsaLimit(isa: IsaLimit): void {
  if (isa === 'native') return;
  if (isa !== 'avx2') throw new UserError(`--isa: '${isa as string}' is not one of native, avx2`);
  if (process.env[CHILD_MARK] === isa) {
    // 0: NCHWc off (HYDRA_NCHWC=0) or not in this build, so there is nothing to read the ISA off
    const block = nchwcBlockSize();
    if (block > 8) throw new UserError(`--isa avx2: onnxruntime still runs NCHWc blocks of ${block} channels (8 expected with AVX2 kernels)`);
    return;
  }
  const dir = avx2Library();
  const env = {
    ...process.env,
    [CHILD_MARK]: isa,
    LD_LIBRARY_PATH: [dir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
    ONEDNN_MAX_CPU_ISA: 'AVX2',
  };
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { env, stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

/** What the kernels on each side were limited to, for the bench's report. */
export function isaNote(isa: IsaLimit): string {
  const block = nchwcBlockSize();
  const ours = `onnxruntime NCHWc block ${block || 'none'}${block === 16 ? ' (AVX-512 kernels)' : block === 8 ? ' (AVX2 kernels)' : ''}`;
  return isa === 'avx2' ? `ISA limited to AVX2 (--isa avx2: onnxruntime sees no AVX-512 state, oneDNN ONEDNN_MAX_CPU_ISA=AVX2): ${ours}` : ours;
}
