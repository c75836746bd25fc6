// Checkpoints: a JSON file (metadata, state) and a binary file (tensors), each written atomically;
// the JSON names the binary's hash, so a checkpoint is either complete or absent.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../util/fs.js';
import { UserError } from '../util/errors.js';

export interface Checkpoint<M> {
  meta: M;
  tensors: Map<string, Float32Array>;
}

export function saveCheckpoint<M>(dir: string, name: string, c: Checkpoint<M>): void {
  fs.mkdirSync(dir, { recursive: true });
  const index: { name: string; offset: number; length: number }[] = [];
  let total = 0;
  for (const [k, v] of c.tensors) {
    index.push({ name: k, offset: total, length: v.length });
    total += v.length;
  }
  const buf = new Float32Array(total);
  for (const [i, v] of [...c.tensors.values()].entries()) buf.set(v, index[i]!.offset);
  const bytes = new Uint8Array(buf.buffer);
  const hash = crypto.createHash('sha256').update(bytes).digest('hex');
  // the tensor file is named by its hash: a crash between the two writes leaves the previous pair intact
  const bin = `${name}.${hash.slice(0, 16)}.bin`;
  const jf = path.join(dir, `${name}.json`);
  const old = fs.existsSync(jf) ? (JSON.parse(fs.readFileSync(jf, 'utf8')) as { bin?: string }).bin : undefined;
  writeFileAtomic(path.join(dir, bin), bytes);
  writeFileAtomic(jf, JSON.stringify({ version: 1, sha256: hash, bin, index, meta: c.meta }, null, 1));
  if (old && old !== bin) fs.rmSync(path.join(dir, old), { force: true });
}

export function loadCheckpoint<M>(dir: string, name: string): Checkpoint<M> | undefined {
  const jf = path.join(dir, `${name}.json`);
  if (!fs.existsSync(jf)) return undefined;
  const j = JSON.parse(fs.readFileSync(jf, 'utf8')) as { sha256: string; bin: string; index: { name: string; offset: number; length: number }[]; meta: M };
  const bf = path.join(dir, j.bin);
  if (!fs.existsSync(bf)) throw new UserError(`checkpoint '${jf}' names '${j.bin}', which is missing; delete ${dir} to start over`);
  const bytes = fs.readFileSync(bf);
  const hash = crypto.createHash('sha256').update(bytes).digest('hex');
  if (hash !== j.sha256) throw new UserError(`checkpoint '${jf}' does not match its tensor file (interrupted copy?); delete ${dir} to start over`);
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const tensors = new Map<string, Float32Array>();
  for (const e of j.index) tensors.set(e.name, all.slice(e.offset, e.offset + e.length));
  return { meta: j.meta, tensors };
}
