// The heavy NCHW primitives the graph uses, chosen per tfjs backend: engines with their own fast kernels
// register them here; every other backend gets the portable compositions of stock tfjs ops.
import { tf } from './tf.js';
import {
  avgPool2dComposite, conv2dComposite, convTranspose2dComposite, maxPool2dComposite,
  type Conv2DParams, type ConvTranspose2DParams, type Pool2DParams,
} from './nn.js';

export type { Conv2DParams, ConvTranspose2DParams, Pool2DParams, Pads2D } from './nn.js';

export interface NnOps {
  conv2d(x: tf.Tensor4D, w: tf.Tensor4D, p: Conv2DParams): tf.Tensor4D;
  convTranspose2d(x: tf.Tensor4D, w: tf.Tensor4D, p: ConvTranspose2DParams): tf.Tensor4D;
  maxPool2d(x: tf.Tensor4D, p: Pool2DParams): tf.Tensor4D;
  avgPool2d(x: tf.Tensor4D, p: Pool2DParams, countIncludePad: boolean): tf.Tensor4D;
}

export const compositeOps: NnOps = {
  conv2d: conv2dComposite,
  convTranspose2d: convTranspose2dComposite,
  maxPool2d: maxPool2dComposite,
  avgPool2d: avgPool2dComposite,
};

const byBackend = new Map<string, NnOps>();
let forced: NnOps | undefined;

export function registerNnOps(backend: string, ops: NnOps): void {
  byBackend.set(backend, ops);
}

/** Use these primitives whatever the backend (tests compare implementations this way). */
export function forceNnOps(ops: NnOps | undefined): void {
  forced = ops;
}

export function nnOps(): NnOps {
  return forced ?? byBackend.get(tf.getBackend()) ?? compositeOps;
}
