// Bounds on what a model file can make onnx-hydra allocate or compute, checked before the allocation:
// a declared size must be backed by the data present and stay below these limits, so a malformed or
// hostile file ends in a one-line error naming the tensor or node instead of an out-of-memory crash or a
// computation that runs for minutes. (Hand-written: the checks belong to our own allocation sites.)
import { OnnxError } from '../util/errors.js';

const envLimit = (name: string, def: number): number => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : def;
};

/** Elements any one tensor may hold (2^29: 2 GiB of float32). `ONNX_HYDRA_MAX_TENSOR_ELEMENTS` overrides it. */
export const MAX_TENSOR_ELEMENTS = envLimit('ONNX_HYDRA_MAX_TENSOR_ELEMENTS', 2 ** 29);

/**
 * Elements one example's activation may hold (2^24 = 16.8 M; ImageNet classifiers at 224×224 stay below
 * 1 M, and the largest torchvision one below 6 M). An activation's first axis is its batch, so this bounds
 * the elements per index of the first axis. `ONNX_HYDRA_MAX_SAMPLE_ELEMENTS` overrides it.
 */
export const MAX_SAMPLE_ELEMENTS = envLimit('ONNX_HYDRA_MAX_SAMPLE_ELEMENTS', 2 ** 24);

/**
 * How many times an example's input one activation may hold (256; classifiers stay below ~30×: ResNet-18
 * at 224×224 5×, on CIFAR 21×), with a floor of 2^20 for small inputs. `ONNX_HYDRA_MAX_EXPANSION` overrides it.
 */
export const MAX_EXPANSION = envLimit('ONNX_HYDRA_MAX_EXPANSION', 256);

/** The per-example element limit of a graph whose inputs hold `inputElements` per example. */
export function sampleLimitFor(inputElements: number): number {
  return Math.min(MAX_SAMPLE_ELEMENTS, Math.max(2 ** 20, MAX_EXPANSION * inputElements));
}

/** Element count of a shape whose dims may come from int64 fields; Infinity when it exceeds 2^53. */
export function countElements(shape: readonly (number | bigint)[]): number {
  let n = 1;
  for (const d of shape) {
    const v = Number(d);
    if (!(v >= 0) || !Number.isSafeInteger(v)) return Number.POSITIVE_INFINITY;
    n *= v;
    if (n > Number.MAX_SAFE_INTEGER) return Number.POSITIVE_INFINITY;
  }
  return n;
}

const fmt = (n: number): string => (Number.isFinite(n) ? n.toLocaleString('en-US') : 'more than 2^53');

/** Throws naming `where` when a tensor of `shape` would be larger than MAX_TENSOR_ELEMENTS. */
export function checkTensorSize(shape: readonly (number | bigint)[], where: string): number {
  if (shape.some((d) => Number(d) < 0)) throw new OnnxError(`${where}: negative dimension in [${shape.join(',')}]`);
  const n = countElements(shape);
  if (n > MAX_TENSOR_ELEMENTS) {
    throw new OnnxError(`${where}: shape [${shape.join(',')}] declares ${fmt(n)} elements, above the limit of ${fmt(MAX_TENSOR_ELEMENTS)} (ONNX_HYDRA_MAX_TENSOR_ELEMENTS)`);
  }
  return n;
}

/**
 * Throws naming `where` when an operator's output of `shape` would be absurdly large: more than
 * MAX_TENSOR_ELEMENTS in all, or more than MAX_SAMPLE_ELEMENTS per index of its first axis.
 */
export function checkOutputSize(shape: readonly number[], where: string, sampleLimit = MAX_SAMPLE_ELEMENTS): void {
  const n = checkTensorSize(shape, where);
  const perSample = shape.length > 1 && shape[0]! > 0 ? n / shape[0]! : n;
  if (perSample > sampleLimit) {
    throw new OnnxError(`${where}: its output [${shape.join(',')}] would hold ${fmt(perSample)} elements per example, above the limit of ${fmt(sampleLimit)} ` +
      `(${MAX_EXPANSION}× the input, at least 2^20, at most 2^24; ONNX_HYDRA_MAX_EXPANSION, ONNX_HYDRA_MAX_SAMPLE_ELEMENTS); the file's attributes or shapes are probably wrong`);
  }
}
