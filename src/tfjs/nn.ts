// NCHW convolution and pooling with exact ONNX semantics (asymmetric pads, dilations, groups, ceil mode),
// written with stock tfjs ops so that they run and differentiate on every tfjs backend.
// tfjs itself lacks pieces (no groups, no dilated-conv gradient, no StridedSlice gradient, NHWC pooling
// only), so each gap is closed with differentiable ops: dilated kernels are zero-inserted, strided windows
// are taken with slice+reshape, and groups are split.
import { tf } from './tf.js';
import { poolDivisors } from '../onnx/semantics.js';

export type Pads2D = [number, number, number, number]; // top, left, bottom, right

export interface Conv2DParams {
  strides: [number, number];
  pads: Pads2D;
  dilations: [number, number];
  group: number;
}

/** Insert (d-1) zeros between elements along axes 2 and 3 (works for kernels and activations). */
export function zeroInsert(t: tf.Tensor4D, dh: number, dw: number): tf.Tensor4D {
  if (dh === 1 && dw === 1) return t;
  const [a, b, h, w] = t.shape;
  const t6 = tf.reshape(t, [a, b, h, 1, w, 1]);
  const padded = tf.pad(t6, [[0, 0], [0, 0], [0, 0], [0, dh - 1], [0, 0], [0, dw - 1]]);
  const full = tf.reshape(padded, [a, b, h * dh, w * dw]);
  return tf.slice(full, [0, 0, 0, 0], [a, b, (h - 1) * dh + 1, (w - 1) * dw + 1]) as tf.Tensor4D;
}

/** Pad (or crop, for negative amounts) the two spatial axes of an NCHW tensor. */
export function padSpatial(x: tf.Tensor4D, pads: Pads2D, value = 0): tf.Tensor4D {
  const [pt, pl, pb, pr] = pads;
  let y = x;
  if (pt < 0 || pl < 0 || pb < 0 || pr < 0) {
    const [n, c, h, w] = y.shape;
    const ct = Math.max(0, -pt);
    const cl = Math.max(0, -pl);
    y = tf.slice(y, [0, 0, ct, cl], [n, c, h - ct - Math.max(0, -pb), w - cl - Math.max(0, -pr)]);
  }
  const p = [Math.max(0, pt), Math.max(0, pl), Math.max(0, pb), Math.max(0, pr)];
  if (p.some((v) => v > 0)) y = tf.pad(y, [[0, 0], [0, 0], [p[0]!, p[2]!], [p[1]!, p[3]!]], value);
  return y;
}

/** ONNX Conv on NCHW input with OIHW weights (bias added by the caller). */
export function conv2dComposite(x: tf.Tensor4D, w: tf.Tensor4D, p: Conv2DParams): tf.Tensor4D {
  const wd = zeroInsert(w, p.dilations[0], p.dilations[1]);
  const xp = padSpatial(x, p.pads);
  const g = p.group;
  const conv = (xi: tf.Tensor4D, wi: tf.Tensor4D): tf.Tensor4D => {
    const xh = tf.transpose(xi, [0, 2, 3, 1]) as tf.Tensor4D; // NHWC
    const wh = tf.transpose(wi, [2, 3, 1, 0]) as tf.Tensor4D; // HWIO
    const y = tf.conv2d(xh, wh, p.strides, 'valid', 'NHWC');
    return tf.transpose(y, [0, 3, 1, 2]);
  };
  if (g === 1) return conv(xp, wd);
  const xs = tf.split(xp, g, 1) as tf.Tensor4D[];
  const ws = tf.split(wd, g, 0) as tf.Tensor4D[];
  return tf.concat(xs.map((xi, i) => conv(xi, ws[i]!)), 1) as tf.Tensor4D;
}

export interface ConvTranspose2DParams {
  strides: [number, number];
  /** pads removed from the full output: top, left, bottom, right */
  pads: Pads2D;
  dilations: [number, number];
  group: number;
  outputPadding: [number, number];
}

/**
 * ONNX ConvTranspose, NCHW input, weights [Cin, Cout/group, KH, KW]: the gradient of Conv with respect to its
 * input, computed as a stride-1 convolution of the zero-inserted input with the flipped, transposed kernel.
 */
export function convTranspose2dComposite(x: tf.Tensor4D, w: tf.Tensor4D, p: ConvTranspose2DParams): tf.Tensor4D {
  const [, , kh, kw] = w.shape;
  const [dh, dw] = p.dilations;
  const kdh = (kh - 1) * dh + 1;
  const kdw = (kw - 1) * dw + 1;
  const xi = zeroInsert(x, p.strides[0], p.strides[1]);
  const [pt, pl, pb, pr] = p.pads;
  const xp = padSpatial(xi, [kdh - 1 - pt, kdw - 1 - pl, kdh - 1 - pb + p.outputPadding[0], kdw - 1 - pr + p.outputPadding[1]]);
  const g = p.group;
  const flip = (wi: tf.Tensor4D): tf.Tensor4D => tf.transpose(tf.reverse(wi, [2, 3]), [1, 0, 2, 3]) as tf.Tensor4D;
  const params: Conv2DParams = { strides: [1, 1], pads: [0, 0, 0, 0], dilations: p.dilations, group: 1 };
  if (g === 1) return conv2dComposite(xp, flip(w), params);
  const xs = tf.split(xp, g, 1) as tf.Tensor4D[];
  const ws = tf.split(w, g, 0) as tf.Tensor4D[];
  return tf.concat(xs.map((xg, i) => conv2dComposite(xg, flip(ws[i]!), params)), 1) as tf.Tensor4D;
}

export interface Pool2DParams {
  kernel: [number, number];
  strides: [number, number];
  dilations: [number, number];
  /** explicit pads: top, left, bottom, right */
  pads: Pads2D;
  /** output size (already includes ceil_mode) */
  out: [number, number];
}

/** Every kernel offset's strided window of the padded input, shape [N, C, OH, OW] each. */
function windows(x: tf.Tensor4D, p: Pool2DParams, padValue: number): tf.Tensor4D[] {
  const [n, c, h, w] = x.shape;
  const [kh, kw] = p.kernel;
  const [sh, sw] = p.strides;
  const [dh, dw] = p.dilations;
  const [oh, ow] = p.out;
  const [pt, pl] = p.pads;
  // rows needed: the last window offset plus OH full strides (slice+reshape takes every sh-th row)
  const needH = (kh - 1) * dh + oh * sh;
  const needW = (kw - 1) * dw + ow * sw;
  // bottom/right: pad up to what the windows read, or crop what none of them reads
  const xp = padSpatial(x, [pt, pl, needH - h - pt, needW - w - pl], padValue);
  const out: tf.Tensor4D[] = [];
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      let s: tf.Tensor = tf.slice(xp, [0, 0, i * dh, j * dw], [n, c, oh * sh, ow * sw]);
      if (sh > 1 || sw > 1) {
        s = tf.reshape(s, [n, c, oh, sh, ow, sw]);
        s = tf.slice(s, [0, 0, 0, 0, 0, 0], [n, c, oh, 1, ow, 1]);
        s = tf.reshape(s, [n, c, oh, ow]);
      }
      out.push(s as tf.Tensor4D);
    }
  }
  return out;
}

/**
 * Pad explicitly (pads and ceil-mode overhang), then use tfjs's own NHWC pooling with 'valid' windows.
 * Returns the window reduction per output position.
 */
function nativePool(x: tf.Tensor4D, p: Pool2DParams, kind: 'max' | 'avg', padValue: number): tf.Tensor4D {
  const [, , h, w] = x.shape;
  const [kh, kw] = p.kernel;
  const [sh, sw] = p.strides;
  const [oh, ow] = p.out;
  const [pt, pl] = p.pads;
  const xp = padSpatial(x, [pt, pl, (oh - 1) * sh + kh - h - pt, (ow - 1) * sw + kw - w - pl], padValue);
  const xh = tf.transpose(xp, [0, 2, 3, 1]) as tf.Tensor4D;
  const y = kind === 'max' ? tf.maxPool(xh, [kh, kw], [sh, sw], 'valid') : tf.avgPool(xh, [kh, kw], [sh, sw], 'valid');
  return tf.transpose(y, [0, 3, 1, 2]);
}

export function maxPool2dComposite(x: tf.Tensor4D, p: Pool2DParams): tf.Tensor4D {
  if (p.dilations[0] === 1 && p.dilations[1] === 1) return nativePool(x, p, 'max', -Infinity);
  const ws = windows(x, p, -Infinity);
  let acc = ws[0]!;
  for (let i = 1; i < ws.length; i++) acc = tf.maximum(acc, ws[i]!);
  return acc;
}

export function avgPool2dComposite(x: tf.Tensor4D, p: Pool2DParams, countIncludePad: boolean): tf.Tensor4D {
  const inv = poolDivisors([x.shape[2], x.shape[3]], { ...p, kernel: [...p.kernel], strides: [...p.strides], dilations: [...p.dilations], pads: [...p.pads], out: [...p.out] }, countIncludePad);
  if (p.dilations[0] === 1 && p.dilations[1] === 1) {
    // tfjs averages over the whole (zero-padded) window: rescale to ONNX's divisor per position
    const k = p.kernel[0] * p.kernel[1];
    const scale = inv.map((v) => v * k);
    const mean = nativePool(x, p, 'avg', 0);
    return scale.every((v) => v === 1) ? mean : tf.mul(mean, tf.tensor(scale, [p.out[0], p.out[1]]));
  }
  const ws = windows(x, p, 0);
  const sum = ws.length === 1 ? ws[0]! : (tf.addN(ws) as tf.Tensor4D);
  return tf.mul(sum, tf.tensor(inv, [p.out[0], p.out[1]]));
}
