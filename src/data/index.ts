// `--data <spec>`: which dataset, from where.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.js';
import { loadIdxPair, packageRoot, type Dataset } from './dataset.js';
import { loadCifar10, loadCifar100, loadNpyPair } from './formats.js';

export type { Dataset } from './dataset.js';
export { makeDataset, slice } from './dataset.js';

export interface DataSplits {
  spec: string;
  train: Dataset;
  test: Dataset;
}

const cache = new Map<string, DataSplits>();

function mnistLike(dir: string, name: string): DataSplits {
  const f = (base: string): string => {
    for (const cand of [`${base}.gz`, base, base.replace('-idx', '.idx')]) if (fs.existsSync(path.join(dir, cand))) return path.join(dir, cand);
    throw new UserError(`${name}: '${base}(.gz)' not found in '${dir}'`);
  };
  return {
    spec: name,
    train: loadIdxPair(f('train-images-idx3-ubyte'), f('train-labels-idx1-ubyte'), `${name}/train`),
    test: loadIdxPair(f('t10k-images-idx3-ubyte'), f('t10k-labels-idx1-ubyte'), `${name}/test`),
  };
}

/**
 * Data specs:
 *  fashion-mnist              the embedded copy under data/fashion-mnist/
 *  mnist:<dir> / fashion-mnist:<dir>   the four IDX files (gzipped or not) in <dir>
 *  cifar10:<dir> / cifar100:<dir>   CIFAR binary batches (data_batch_1..5.bin + test_batch.bin / train.bin + test.bin)
 *  idx:<images>,<labels>      one IDX pair, used as the test split; a second pair after ';' is the train split
 *  npy:<x.npy>,<y.npy>        one .npy pair (NCHW, NHW or NHWC; uint8 or float in [0,1]), same convention
 */
export function loadData(spec: string): DataSplits {
  const hit = cache.get(spec);
  if (hit) return hit;
  let out: DataSplits;
  const [kind, rest] = spec.includes(':') ? [spec.slice(0, spec.indexOf(':')), spec.slice(spec.indexOf(':') + 1)] : [spec, ''];
  switch (kind) {
    case 'fashion-mnist':
      out = mnistLike(rest || path.join(packageRoot(), 'data', 'fashion-mnist'), 'fashion-mnist');
      break;
    case 'mnist':
      if (!rest) throw new UserError(`--data mnist needs a folder: mnist:<dir> with the four IDX files`);
      out = mnistLike(rest, 'mnist');
      break;
    case 'cifar10':
    case 'cifar100': {
      if (!rest) throw new UserError(`--data ${kind} needs a folder: ${kind}:<dir> with the binary batches (${kind === 'cifar10' ? 'cifar-10-binary.tar.gz' : 'cifar-100-binary.tar.gz'}, unpacked)`);
      out = { spec, ...(kind === 'cifar10' ? loadCifar10(rest) : loadCifar100(rest)) };
      break;
    }
    case 'npy': {
      const pairs = rest.split(';').map((p) => p.split(',').map((s) => s.trim()));
      if (!pairs.every((p) => p.length === 2 && p[0] && p[1])) throw new UserError(`--data npy:<x.npy>,<y.npy>[;<train x.npy>,<train y.npy>] expected, got '${spec}'`);
      const test = loadNpyPair(pairs[0]![0]!, pairs[0]![1]!, 'npy/test');
      const train = pairs[1] ? loadNpyPair(pairs[1][0]!, pairs[1][1]!, 'npy/train') : test;
      out = { spec, train, test };
      break;
    }
    case 'idx': {
      const pairs = rest.split(';').map((p) => p.split(',').map((s) => s.trim()));
      if (!pairs.every((p) => p.length === 2 && p[0] && p[1])) throw new UserError(`--data idx:<images>,<labels>[;<train images>,<train labels>] expected, got '${spec}'`);
      const test = loadIdxPair(pairs[0]![0]!, pairs[0]![1]!, `idx/test`);
      const train = pairs[1] ? loadIdxPair(pairs[1][0]!, pairs[1][1]!, 'idx/train') : test;
      out = { spec, train, test };
      break;
    }
    default:
      throw new UserError(`unknown --data '${spec}': use fashion-mnist, fashion-mnist:<dir>, mnist:<dir>, cifar10:<dir>, cifar100:<dir>, idx:<images>,<labels> or npy:<x.npy>,<y.npy>`);
  }
  cache.set(spec, out);
  return out;
}

/** A one-line error unless the dataset's images fit the model input [C, H, W]. */
export function checkDataFitsModel(d: Dataset, inputShape: (number | string)[], classes?: number): void {
  const want = inputShape.slice(1);
  if (want.length !== 3 || want.some((v, i) => typeof v === 'number' && v !== d.shape[i])) {
    throw new UserError(`data '${d.name}' has images of shape [${d.shape}], the model expects [${want}]`);
  }
  if (classes !== undefined && d.classes > classes) {
    throw new UserError(`data '${d.name}' has ${d.classes} classes, the model outputs ${classes}`);
  }
}
