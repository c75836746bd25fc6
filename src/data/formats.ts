// Dataset formats beyond IDX: CIFAR-10/100 binary batches and NumPy .npy pairs (read with npyjs).
import fs from 'node:fs';
import path from 'node:path';
import { parse as parseNpy } from 'npyjs';
import { UserError } from '../util/errors.js';
import { makeDataset, readMaybeGz, type Dataset } from './dataset.js';

/**
 * CIFAR binary batches: records of <label byte(s)><3072 bytes: R, G, B planes of 32×32>. CIFAR-10 has one
 * label byte, CIFAR-100 two (coarse, fine; the fine label is used).
 */
export function loadCifarBatches(files: string[], name: string, labelBytes: 1 | 2): Dataset {
  const bufs = files.map((f) => readMaybeGz(f));
  const rec = labelBytes + 3072;
  for (const [i, b] of bufs.entries()) if (b.length % rec !== 0) throw new UserError(`'${files[i]}' is not a CIFAR-${labelBytes === 1 ? 10 : 100} binary batch (${b.length} bytes is not a multiple of ${rec})`);
  const n = bufs.reduce((s, b) => s + b.length / rec, 0);
  const x = new Float32Array(n * 3072);
  const y = new Int32Array(n);
  let k = 0;
  for (const b of bufs) {
    for (let o = 0; o < b.length; o += rec, k++) {
      y[k] = b[o + labelBytes - 1]!;
      for (let j = 0; j < 3072; j++) x[k * 3072 + j] = b[o + labelBytes + j]! / 255;
    }
  }
  return makeDataset(name, x, y, [3, 32, 32], labelBytes === 1 ? 10 : 100);
}

function findIn(dir: string, names: string[], what: string): string {
  for (const sub of ['', 'cifar-10-batches-bin', 'cifar-100-binary']) {
    for (const nm of names) {
      const p = path.join(dir, sub, nm);
      if (fs.existsSync(p)) return p;
    }
  }
  throw new UserError(`${what}: '${names[0]}' not found in '${dir}' (or its cifar-10-batches-bin / cifar-100-binary folder)`);
}

export function loadCifar10(dir: string): { train: Dataset; test: Dataset } {
  const train = [1, 2, 3, 4, 5].map((i) => findIn(dir, [`data_batch_${i}.bin`], 'cifar10'));
  return { train: loadCifarBatches(train, 'cifar10/train', 1), test: loadCifarBatches([findIn(dir, ['test_batch.bin'], 'cifar10')], 'cifar10/test', 1) };
}

export function loadCifar100(dir: string): { train: Dataset; test: Dataset } {
  return { train: loadCifarBatches([findIn(dir, ['train.bin'], 'cifar100')], 'cifar100/train', 2), test: loadCifarBatches([findIn(dir, ['test.bin'], 'cifar100')], 'cifar100/test', 2) };
}

/**
 * A pair of .npy files: images [N, H, W], [N, C, H, W] or channels-last [N, H, W, C] (C = 1 or 3), uint8
 * (scaled by 1/255) or float (taken as pixels in [0,1]); labels [N] of any integer type.
 */
export function loadNpyPair(xFile: string, yFile: string, name: string): Dataset {
  const read = (f: string) => {
    const b = readMaybeGz(f);
    try {
      return parseNpy(b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer);
    } catch (e) {
      throw new UserError(`'${f}' is not a readable .npy file: ${(e as Error).message}`);
    }
  };
  const X = read(xFile);
  const Y = read(yFile);
  if (X.fortranOrder || Y.fortranOrder) throw new UserError(`'${X.fortranOrder ? xFile : yFile}' is in Fortran order; save it with np.ascontiguousarray`);
  if (Y.shape.length !== 1) throw new UserError(`'${yFile}': labels should be one-dimensional, got [${Y.shape}]`);
  if (!/^[iu][1248]$/.test(Y.dtype)) throw new UserError(`'${yFile}': labels should be integers, got dtype ${Y.dtype}`);
  const n = X.shape[0]!;
  if (n !== Y.shape[0]) throw new UserError(`'${xFile}' has ${n} images, '${yFile}' has ${Y.shape[0]} labels`);
  let shape: [number, number, number];
  let channelsLast = false;
  if (X.shape.length === 3) shape = [1, X.shape[1]!, X.shape[2]!];
  else if (X.shape.length === 4) {
    const [, a, b, c] = X.shape as [number, number, number, number];
    channelsLast = (c === 1 || c === 3) && a !== 1 && a !== 3;
    shape = channelsLast ? [c, a, b] : [a, b, c];
  } else throw new UserError(`'${xFile}': images should be [N, H, W], [N, C, H, W] or [N, H, W, C], got [${X.shape}]`);
  const scale = X.dtype === 'u1' ? 1 / 255 : /^f[248]$/.test(X.dtype) ? 1 : NaN;
  if (!Number.isFinite(scale)) throw new UserError(`'${xFile}': images should be uint8 or float, got dtype ${X.dtype}`);
  const src = X.data as unknown as ArrayLike<number>;
  const [C, H, W] = shape;
  const x = new Float32Array(n * C * H * W);
  if (!channelsLast) for (let i = 0; i < x.length; i++) x[i] = src[i]! * scale;
  else {
    for (let e = 0; e < n; e++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) for (let c = 0; c < C; c++) {
      x[((e * C + c) * H + h) * W + w] = src[((e * H + h) * W + w) * C + c]! * scale;
    }
  }
  const yd = Y.data as unknown as ArrayLike<number | bigint>;
  const y = Int32Array.from({ length: n }, (_, i) => Number(yd[i]));
  return makeDataset(name, x, y, shape);
}
