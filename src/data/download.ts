// Downloading the public datasets (for users; tests serve local files over HTTP): streamed to a temporary
// file with a progress bar, renamed into place when complete; tarballs unpacked with `tar`.
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { UserError } from '../util/errors.js';
import { progressBar } from '../util/progress.js';

export const SOURCES: Record<string, { base: string; files: string[]; untar?: boolean; spec: (dir: string) => string }> = {
  'fashion-mnist': {
    base: 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
    files: ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'],
    spec: (d) => `fashion-mnist:${d}`,
  },
  mnist: {
    base: 'https://ossci-datasets.s3.amazonaws.com/mnist/',
    files: ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'],
    spec: (d) => `mnist:${d}`,
  },
  cifar10: { base: 'https://www.cs.toronto.edu/~kriz/', files: ['cifar-10-binary.tar.gz'], untar: true, spec: (d) => `cifar10:${d}` },
  cifar100: { base: 'https://www.cs.toronto.edu/~kriz/', files: ['cifar-100-binary.tar.gz'], untar: true, spec: (d) => `cifar100:${d}` },
};

async function fetchTo(url: string, file: string, quiet: boolean): Promise<number> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new UserError(`cannot download ${url}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`);
  }
  if (!res.ok || !res.body) throw new UserError(`cannot download ${url}: HTTP ${res.status}`);
  const total = Number(res.headers.get('content-length') ?? 0);
  const bar = progressBar(path.basename(file), total || 1, { quiet });
  let done = 0;
  const tmp = `${file}.${process.pid}.part`;
  const counted = Readable.fromWeb(res.body as never).on('data', (b: Buffer) => {
    done += b.length;
    bar.update(Math.min(done, total || done));
  });
  try {
    await pipeline(counted, fs.createWriteStream(tmp));
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new UserError(`download of ${url} failed: ${(e as Error).message}`);
  }
  bar.stop();
  if (total && done !== total) {
    fs.rmSync(tmp, { force: true });
    throw new UserError(`download of ${url} stopped at ${done} of ${total} bytes`);
  }
  fs.renameSync(tmp, file);
  return done;
}

/** Download (or reuse) a dataset into dir; returns the --data spec that reads it. */
export async function downloadDataset(name: string, dir: string, o: { baseUrl?: string; quiet?: boolean } = {}): Promise<{ spec: string; files: { file: string; bytes: number; reused: boolean }[] }> {
  const src = SOURCES[name];
  if (!src) throw new UserError(`unknown dataset '${name}': ${Object.keys(SOURCES).join(', ')}`);
  fs.mkdirSync(dir, { recursive: true });
  const files: { file: string; bytes: number; reused: boolean }[] = [];
  for (const f of src.files) {
    const file = path.join(dir, f);
    const reused = fs.existsSync(file);
    const bytes = reused ? fs.statSync(file).size : await fetchTo(new URL(f, o.baseUrl ?? src.base).href, file, !!o.quiet);
    if (src.untar) await tar.x({ file, cwd: dir });
    files.push({ file, bytes, reused });
  }
  return { spec: src.spec(dir), files };
}
