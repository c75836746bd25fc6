// Datasets in memory: images as float32 in [0,1], NCHW, labels as int32.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { UserError } from '../util/errors.js';

export interface Dataset {
  name: string;
  /** images, N·C·H·W values in [0, 1] */
  x: Float32Array;
  y: Int32Array;
  /** shape of one image: [C, H, W] */
  shape: [number, number, number];
  classes: number;
  get length(): number;
}

export function makeDataset(name: string, x: Float32Array, y: Int32Array, shape: [number, number, number], classes?: number): Dataset {
  const per = shape[0] * shape[1] * shape[2];
  if (x.length !== y.length * per) throw new UserError(`${name}: ${x.length / per} images but ${y.length} labels`);
  let max = 0;
  for (const v of y) {
    if (v < 0) throw new UserError(`${name}: negative label ${v}`);
    if (v > max) max = v;
  }
  return { name, x, y, shape, classes: classes ?? max + 1, get length() { return y.length; } };
}

/** Images [from, to) of a dataset (no copy). */
export function slice(d: Dataset, from: number, to: number): Dataset {
  const per = d.shape[0] * d.shape[1] * d.shape[2];
  return makeDataset(d.name, d.x.subarray(from * per, to * per), d.y.subarray(from, to), d.shape, d.classes);
}

/** Read a file, gunzipping it when its name ends in .gz or it starts with the gzip magic bytes. */
export function readMaybeGz(file: string): Buffer {
  if (!fs.existsSync(file)) throw new UserError(`data file '${file}' not found`);
  const raw = fs.readFileSync(file);
  if (raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      return zlib.gunzipSync(raw);
    } catch (e) {
      throw new UserError(`data file '${file}' is not a valid gzip file: ${(e as Error).message}`);
    }
  }
  return raw;
}

/** IDX files (MNIST, Fashion-MNIST): images u8 [N, H, W] (or [N, C, H, W]), labels u8 [N]. */
export function readIdx(file: string): { dims: number[]; data: Uint8Array } {
  const b = readMaybeGz(file);
  if (b.length < 8 || b[0] !== 0 || b[1] !== 0) throw new UserError(`'${file}' is not an IDX file (bad magic number)`);
  const type = b[2];
  if (type !== 0x08) throw new UserError(`'${file}': IDX element type 0x${type!.toString(16)} is not supported (unsigned bytes only)`);
  const nd = b[3]!;
  const dims: number[] = [];
  for (let i = 0; i < nd; i++) dims.push(b.readUInt32BE(4 + 4 * i));
  const off = 4 + 4 * nd;
  const n = dims.reduce((p, d) => p * d, 1);
  if (b.length - off !== n) throw new UserError(`'${file}': IDX header says ${n} values, the file has ${b.length - off}`);
  return { dims, data: new Uint8Array(b.buffer, b.byteOffset + off, n) };
}

export function loadIdxPair(images: string, labels: string, name: string): Dataset {
  const im = readIdx(images);
  const lb = readIdx(labels);
  if (lb.dims.length !== 1) throw new UserError(`'${labels}': labels should be one-dimensional, got [${lb.dims}]`);
  if (im.dims[0] !== lb.dims[0]) throw new UserError(`'${images}' has ${im.dims[0]} images, '${labels}' has ${lb.dims[0]} labels`);
  let shape: [number, number, number];
  if (im.dims.length === 3) shape = [1, im.dims[1]!, im.dims[2]!];
  else if (im.dims.length === 4) shape = [im.dims[1]!, im.dims[2]!, im.dims[3]!];
  else throw new UserError(`'${images}': images should be [N, H, W] or [N, C, H, W], got [${im.dims}]`);
  const x = new Float32Array(im.data.length);
  for (let i = 0; i < x.length; i++) x[i] = im.data[i]! / 255;
  return makeDataset(name, x, Int32Array.from(lb.data), shape);
}

/** The package's root folder (where data/ and models/ live). */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'data'))) return dir;
    dir = path.dirname(dir);
  }
  return process.cwd();
}
