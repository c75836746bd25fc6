// Layers: convolution, pooling, normalization, dense products, dropout. Each has one spec: forward,
// gradient, interval and linear bound rules, parameter slots (with fan-in) and int8 target.
import { tf } from '../tfjs/tf.js';
import { nnOps, type Pads2D } from '../tfjs/kernels.js';
import type { GraphBuilder } from '../onnx/builder.js';
import { convTransposeWindows, poolDivisors, windows, type ConvTransposeAttrs, type WindowAttrs, type Windows } from '../onnx/semantics.js';
import { Attrs, type Node } from './ir.js';
import type { OpCtx } from './values.js';
import { broadcastShapes } from './host.js';
import { BLOCKED_CONV_MIN_WORK, BLOCKED_FILTER_GRAD_MIN_WORK, defineOp, type BoundRules, type GradCtx, type GradRegion, type IbpRule } from './spec.js';
import { dy0, range, reduceTo } from './grad.js';

function windowAttrs(a: Attrs): WindowAttrs {
  return { strides: a.ints('strides'), dilations: a.ints('dilations'), pads: a.ints('pads'), autoPad: a.string('auto_pad', 'NOTSET') };
}
function convTransposeAttrs(a: Attrs): ConvTransposeAttrs {
  return { ...windowAttrs(a), outputPadding: a.ints('output_padding'), outputShape: a.ints('output_shape') };
}
/** Window geometry of a conv/pool node for the converter (errors name the node). */
function spatial(c: OpCtx, inSpatial: number[], kernel: number[], ceil: boolean): Windows {
  return windows(windowAttrs(c.a), inSpatial, kernel, ceil, (why) => c.fail(why));
}
/** Window geometry of a conv/pool node for a gradient rule (the forward pass has validated it). */
function gradWindows(g: GradCtx, kernel: number[], ceil = false): Windows {
  return windows(windowAttrs(g.a), g.inShape(0).slice(2), kernel, ceil, (why) => {
    throw new Error(`${g.node.label}: ${why}`);
  });
}

/** Lift 1-D (N,C,L) to 2-D (N,C,1,L) so one implementation serves both. */
function to2d(s: Windows): { strides: [number, number]; dilations: [number, number]; pads: Pads2D; kernel: [number, number]; out: [number, number] } {
  if (s.kernel.length === 1) {
    return { strides: [1, s.strides[0]!], dilations: [1, s.dilations[0]!], pads: [0, s.pads[0]!, 0, s.pads[1]!], kernel: [1, s.kernel[0]!], out: [1, s.out[0]!] };
  }
  return {
    strides: [s.strides[0]!, s.strides[1]!], dilations: [s.dilations[0]!, s.dilations[1]!],
    pads: [s.pads[0]!, s.pads[1]!, s.pads[2]!, s.pads[3]!], kernel: [s.kernel[0]!, s.kernel[1]!], out: [s.out[0]!, s.out[1]!],
  };
}

function spatialRankCheck(rank: number): string | undefined {
  return rank > 2 ? `${rank}-D spatial windows (only 1-D and 2-D are implemented)` : undefined;
}
const kernelRank = (n: Node): number | undefined => new Attrs(n).ints('kernel_shape')?.length;

// ---- bound rules of affine layers --------------------------------------------------------------
/** Conv/ConvTranspose: centre through the layer, radius through |W| without bias. */
const ibpConv: IbpRule = (c) => {
  if (c.dep[1] || c.dep[2]) c.fail(`${c.node.opType} whose weights depend on the input`);
  const ins = c.node.inputs;
  const [m, r] = c.cr(ins[0]!);
  const co = c.b.fresh('c');
  const ro = c.b.fresh('r');
  c.emit([m, ...ins.slice(1)], [co]);
  c.emit([r, c.abs(ins[1]!)], [ro]);
  c.set(c.node.outputs[0]!, { c: co, r: ro });
};
/** Gemm/MatMul with one input-dependent operand: centre through the product, radius through |other| (and |alpha|, no bias). */
const ibpProduct: IbpRule = (c) => {
  const op = c.node.opType;
  if (c.dep[0] && c.dep[1]) c.fail(`${op} of two values that depend on the input`);
  if (c.dep[2]) c.fail('Gemm bias that depends on the input');
  const ins = c.node.inputs;
  const k = c.dep[0] ? 0 : 1;
  const [m, r] = c.cr(ins[k]!);
  const other = ins[1 - k]!;
  const co = c.b.fresh('c');
  const ro = c.b.fresh('r');
  c.emit(k === 0 ? [m, ...ins.slice(1)] : [ins[0]!, m, ...ins.slice(2)], [co]);
  const attrs = (c.proto.attribute ?? []).filter((x) => x.name !== 'beta' && x.name !== 'alpha');
  const alpha = c.a.float('alpha', 1);
  if (op === 'Gemm' && alpha !== 1) attrs.push({ name: 'alpha', type: 1, f: Math.abs(alpha) });
  c.emit(k === 0 ? [r, c.abs(other)] : [c.abs(other), r], [ro], attrs);
  c.set(c.node.outputs[0]!, { c: co, r: ro });
};
/** Inference BatchNormalization: centre through the node, radius times |scale/sqrt(var + ε)| per channel. */
const ibpBatchNorm: IbpRule = (c) => {
  if (c.dep.slice(1).some(Boolean)) c.fail('BatchNormalization statistics that depend on the input');
  const ins = c.node.inputs;
  const [m, r] = c.cr(ins[0]!);
  const co = c.b.fresh('c');
  c.emit([m, ...ins.slice(1)], [co]);
  const k = c.b.op('Div', [ins[1]!, c.b.op('Sqrt', [c.b.op('Add', [ins[4]!, c.b.scalarF(c.a.float('epsilon', 1e-5))])])]);
  const rank = c.shapeOf(ins[0]!).length;
  const ka = c.b.op('Abs', [k]);
  const kb = rank > 2 ? c.b.op('Unsqueeze', [ka, c.b.constI64(Array.from({ length: rank - 2 }, (_, i) => i + 1))]) : ka;
  c.set(c.node.outputs[0]!, { c: co, r: c.b.op('Mul', [r, kb]) });
};
const weightsFromInput = (n: Node, dep: boolean[]): string | undefined => (!dep[0] ? `${n.opType} whose weights depend on the input` : undefined);
const hasBias = (n: Node): boolean => !!n.inputs[2];
const CONV_BOUNDS: BoundRules = { ibp: ibpConv, crown: { offset: hasBias, unsupported: weightsFromInput } };

defineOp({
  type: 'Conv',
  forward: {
    unsupported: (n) => { const k = kernelRank(n); return k ? spatialRankCheck(k) : undefined; },
    run(c) {
      const x = c.f(0);
      const w = c.f(1);
      if (x.rank !== 3 && x.rank !== 4) c.unsupported(`${x.rank - 2}-D convolution (only 1-D and 2-D are implemented)`);
      if (w.rank !== x.rank) c.fail(`weight of rank ${w.rank} for input of rank ${x.rank}`);
      const group = c.a.int('group', 1);
      if (x.shape[1] !== w.shape[1]! * group) c.fail(`input has ${x.shape[1]} channels, weight expects ${w.shape[1]! * group} (group ${group})`);
      if (w.shape[0]! % group) c.fail(`${w.shape[0]} output channels do not divide into ${group} groups`);
      const kernel = c.a.ints('kernel_shape', w.shape.slice(2));
      const s = to2d(spatial(c, x.shape.slice(2), kernel, false));
      c.checkOutput([x.shape[0]!, w.shape[0]!, ...s.out]);
      const x4 = (x.rank === 3 ? tf.expandDims(x, 2) : x) as tf.Tensor4D;
      const w4 = (w.rank === 3 ? tf.expandDims(w, 2) : w) as tf.Tensor4D;
      let y: tf.Tensor = nnOps().conv2d(x4, w4, { strides: s.strides, pads: s.pads, dilations: s.dilations, group });
      if (c.has(2)) y = tf.add(y, tf.reshape(c.f(2), [1, -1, 1, 1]));
      return [x.rank === 3 ? tf.squeeze(y, [2]) : y];
    },
  },
  grad: (g) => {
    const xs = g.inShape(0);
    const ws = g.inShape(1);
    const ys = g.outShape(0);
    const r = xs.length - 2;
    const group = g.a.int('group', 1);
    const kernel = ws.slice(2);
    const { strides, dilations: dil, pads } = gradWindows(g, kernel);
    const dy = dy0(g);
    let dx: string | undefined;
    if (g.need(0)) {
      // stride 1: the input gradient is a convolution of dy with the flipped, channel-transposed kernel
      // (2-2.5x faster in onnxruntime than ConvTranspose); strided 2-D: columns Wᵀ·dy folded back by Col2Im;
      // otherwise ConvTranspose maps back to the input grid, output_padding covering rows the forward conv skipped
      const flipPads = [...range(0, r).map((i) => (kernel[i]! - 1) * dil[i]! - pads[i]!), ...range(0, r).map((i) => xs[2 + i]! - ys[2 + i]! + (kernel[i]! - 1) * dil[i]! - ((kernel[i]! - 1) * dil[i]! - pads[i]!))];
      if (strides.every((s) => s === 1) && flipPads.every((p) => p >= 0)) {
        const flipped = flippedKernel(g.b, g.x(1), ws, group);
        dx = conv(g.b, dy, ys, flipped, [xs[1]!, ws[0]! / group, ...kernel], { pads: flipPads, dilations: dil, group, kernel_shape: kernel });
      } else if (r === 2 && group === 1) {
        const subPixel = g.blockedConvs ? subPixelGeometry(xs, ws, ys, strides, pads, dil) : undefined;
        dx = subPixel ? subPixelInputGrad(g.b, dy, g.x(1), xs, ws, ys, subPixel) : col2ImInputGrad(g.b, dy, g.x(1), xs, ws, ys, strides, pads, dil);
      } else if (r === 2 && group === xs[1] && ws[0] === group && ws[1] === 1 && kernel.every((k, i) => (k - 1) * dil[i]! >= pads[i]!)) {
        dx = depthwiseStridedInputGrad(g.b, dy, g.x(1), xs, ws, ys, strides, pads, dil);
      } else {
        const outPad = range(0, r).map((i) => xs[2 + i]! - ((ys[2 + i]! - 1) * strides[i]! + (kernel[i]! - 1) * dil[i]! + 1 - pads[i]! - pads[i + r]!));
        dx = g.b.op('ConvTranspose', [dy, g.x(1)], { strides, pads, dilations: dil, group, kernel_shape: kernel, output_padding: outPad });
      }
    }
    let dw: string | undefined;
    if (g.need(1)) dw = convFilterGrad(g.b, g.x(0), dy, xs, ws, ys, strides, pads, dil, group, g.blockedConvs);
    const db = g.has(2) && g.need(2) ? g.b.reduce('ReduceSum', dy, [0, ...range(2, xs.length)], false) : undefined;
    return [dx, dw, db];
  },
  bounds: CONV_BOUNDS,
  params: { slots: [[1, 'weight', true], [2, 'bias', false]], fanIn: (w) => w.slice(1).reduce((p, d) => p * d, 1) },
  quant: (n, isConst) => (isConst(n.input?.[1] ?? '') ? { weightInput: 1, axis: 0 } : undefined),
});

/** A Conv node with its operands' static shapes declared (engine passes that rewrite convolutions read them). */
function conv(b: GraphBuilder, x: string, xShape: number[], w: string, wShape: number[], attrs: Record<string, number | number[]>): string {
  b.setShape(x, xShape);
  b.setShape(w, wShape);
  return b.op('Conv', [x, w], attrs);
}

/** Folds of at most this many matrix entries (16 KiB) run as a GEMM with the fold's matrix instead of Col2Im. */
const FOLD_MATRIX_MAX = 4096;

/**
 * Input gradient of a strided 2-D convolution: the columns Wᵀ·dy ([N, Cin·K·K, OH·OW], one batched MatMul)
 * summed back onto the input grid by Col2Im. Measured in onnxruntime (batch 128, 2 vCPUs): 6-10 ms vs
 * ConvTranspose's 8-11 and a sub-pixel convolution + DepthToSpace's 11-15 for a 3x3 stride-2 layer
 * 32→16 channels at 28x28; within noise of the sub-pixel form for 4x4 kernels.
 */
function col2ImInputGrad(b: GraphBuilder, dy: string, w: string, xs: number[], ws: number[], ys: number[], strides: number[], pads: number[], dil: number[]): string {
  const [cout, cin, kh, kw] = ws as [number, number, number, number];
  const [n, blocks] = [ys[0]!, ys[2]! * ys[3]!];
  const wT = b.op('Transpose', [b.reshape(w, [cout, cin * kh * kw])], { perm: [1, 0] });
  // per image the product is [Cin·K·K, Cout] x [Cout, OH·OW]: with few output positions these GEMMs are too
  // narrow (16.9 ms for ResNet-18's layer3 entry at batch 128, OH·OW = 4), so the batch joins the columns,
  // one GEMM, and the columns are transposed back per image. Not from 16 positions on: at 49 (fashion_cnn's
  // conv2) the transposes cost more than they save (verify's PGD-20 690-770 vs 900-1160 img/s)
  const dy3 = b.reshape(dy, [n, cout, blocks]);
  let cols: string;
  if (blocks >= 16) cols = b.op('MatMul', [wT, dy3]);
  else {
    const dyWide = b.reshape(b.op('Transpose', [dy3], { perm: [1, 0, 2] }), [cout, n * blocks]);
    cols = b.op('Transpose', [b.reshape(b.op('MatMul', [wT, dyWide]), [cin * kh * kw, n, blocks])], { perm: [1, 0, 2] });
  }
  if (kh * kw * blocks * xs[2]! * xs[3]! <= FOLD_MATRIX_MAX) {
    // small maps: the fold as a product with its 0/1 matrix [K·K·OH·OW, H·W] (tap k of block l lands on one
    // pixel or in the padding), a GEMM over all images and channels. onnxruntime's Col2Im runs image after
    // image in scalar code: ResNet-18's layer3 entry 1.1 ms, and its 1x1 stride-2 shortcuts 0.2-0.3 ms plus
    // a Pad of 1.2-1.6 ms for the rows no window reads (measured, batch 128)
    const taps = kh * kw;
    const pixels = xs[2]! * xs[3]!;
    const fold = new Float32Array(taps * blocks * pixels);
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) for (let by = 0; by < ys[2]!; by++) for (let bx = 0; bx < ys[3]!; bx++) {
      const row = by * strides[0]! - pads[0]! + i * dil[0]!;
      const col = bx * strides[1]! - pads[1]! + j * dil[1]!;
      if (row < 0 || row >= xs[2]! || col < 0 || col >= xs[3]!) continue;
      fold[((i * kw + j) * blocks + by * ys[3]! + bx) * pixels + row * xs[3]! + col] = 1;
    }
    return b.reshape(b.op('MatMul', [b.reshape(cols, [n * cin, taps * blocks]), b.constF(fold, [taps * blocks, pixels])]), xs);
  }
  // Col2Im wants the padded image to hold exactly OH x OW windows: rows past the last window are cut from
  // the end pad, or (when the forward conv skipped input rows) padded back on as zeros afterwards
  const reach = [0, 1].map((i) => (ys[2 + i]! - 1) * strides[i]! + ([kh, kw][i]! - 1) * dil[i]! + 1 - pads[i]!);
  const endPads = [0, 1].map((i) => Math.max(0, reach[i]! - xs[2 + i]!));
  const image = [0, 1].map((i) => Math.min(xs[2 + i]!, reach[i]!));
  const folded = b.op('Col2Im', [cols, b.constI64(image), b.constI64([kh, kw])], { strides, dilations: dil, pads: [pads[0]!, pads[1]!, ...endPads] });
  if (image.every((d, i) => d === xs[2 + i])) return folded;
  return b.op('Pad', [folded, b.constI64([0, 0, 0, 0, 0, 0, xs[2]! - image[0]!, xs[3]! - image[1]!])]);
}

/**
 * The sub-pixel form of a strided convolution's input gradient (see subPixelInputGrad): per axis its stride s,
 * taps per phase t, begin pad, phase-grid size, and the grid's rows past dy's (its convolution's end pad).
 */
interface SubPixel { strides: [number, number]; taps: [number, number]; pads: [number, number]; grid: [number, number]; extra: [number, number] }

/**
 * When a strided 2-D convolution's input gradient takes the sub-pixel form: dilation 1, at most 1.35x the
 * multiply-adds of the columns form, and at least 32 channels out of its convolution (its s·s phases of every
 * input channel). Measured (onnxruntime kernels, batch 128, 2 vCPUs with AVX-512): the 4x4 stride-2 layers
 * 16→32 channels at 14x14 (ratio 1.31, 64 channels) 0.94 against 2.06 ms; slower for 3x3 stride-2 layers
 * (ratio 2.25: 10.0 against 7.7 ms for 64→128 at 16x16), the 7x7 stride-2 stem with 3 input channels (12
 * channels: 7.9 against 5.1) and a 4x4 stride-2 layer from 1 channel (4 channels: 1.15 against 0.51).
 */
function subPixelGeometry(xs: number[], ws: number[], ys: number[], strides: number[], pads: number[], dil: number[]): SubPixel | undefined {
  if (dil.some((d) => d !== 1) || ys.length !== 4) return undefined;
  const axes = [0, 1].map((i) => {
    const [s, p] = [strides[i]!, pads[i]!];
    const taps = Math.ceil(ws[2 + i]! / s);
    // the phase grid covers the input and its begin pad in whole strides
    const grid = Math.ceil((p + xs[2 + i]!) / s);
    return { s, p, taps, grid, extra: grid - ys[2 + i]! };
  });
  if (axes.some((a) => a.extra < 0)) return undefined;
  const columnMacs = ys[2]! * ys[3]! * ws[2]! * ws[3]!;
  const subPixelMacs = axes.reduce((m, a) => m * a.s * a.taps * a.grid, 1);
  if (subPixelMacs > 1.35 * columnMacs || xs[1]! * axes[0]!.s * axes[1]!.s < 32) return undefined;
  if (ys[0]! * axes[0]!.grid * axes[1]!.grid < BLOCKED_CONV_MIN_WORK) return undefined;
  const [v, h] = axes as [typeof axes[0], typeof axes[0]];
  return { strides: [v.s, h.s], taps: [v.taps, h.taps], pads: [v.p, h.p], grid: [v.grid, h.grid], extra: [v.extra, h.extra] };
}

/**
 * Input gradient of a strided 2-D convolution as a sub-pixel convolution: input row h (at P = h + begin pad)
 * is phase a = P mod s of grid row i = ⌊P / s⌋, and receives dy rows i − t through kernel rows s·t + a
 * (t < taps). So one stride-1 convolution of dy (begin pad taps − 1) with a kernel of s·s phases per input
 * channel gives every phase at once, [N, Cin·s·s, grid, grid]; a Col2Im whose blocks are the s x s phases
 * and do not overlap lays them onto the input (the begin pad and the grid's excess cut as Col2Im pads).
 * onnxruntime runs the convolution blocked; the columns form's Col2Im over K·K overlapping taps per pixel
 * runs in scalar code, image after image (measurements at subPixelGeometry).
 */
function subPixelInputGrad(b: GraphBuilder, dy: string, w: string, xs: number[], ws: number[], ys: number[], sp: SubPixel): string {
  const [cout, cin, kh, kw] = ws as [number, number, number, number];
  const [sh, sw] = sp.strides;
  const [th, tw] = sp.taps;
  // the kernel [Cin·sh·sw, Cout, th, tw], entry (c, a, b | o, r, q) = w[o, c, sh·(th−1−r)+a, sw·(tw−1−q)+b]
  // (zero past the kernel): the taps picked by a product with a 0/1 matrix (exact), then the channel axes
  // exchanged (last, so the blocked-layout pass reorders straight from it, as for flippedKernel)
  const phases = sh * sw * th * tw;
  const pick = new Float32Array(kh * kw * phases);
  for (let a = 0; a < sh; a++) for (let bb = 0; bb < sw; bb++) for (let r = 0; r < th; r++) for (let q = 0; q < tw; q++) {
    const [row, col] = [sh * (th - 1 - r) + a, sw * (tw - 1 - q) + bb];
    if (row < kh && col < kw) pick[(row * kw + col) * phases + ((a * sw + bb) * th + r) * tw + q] = 1;
  }
  const picked = b.reshape(b.op('MatMul', [b.reshape(w, [cout * cin, kh * kw]), b.constF(pick, [kh * kw, phases])]), [cout, cin * sh * sw, th, tw]);
  b.setShape(picked, [cout, cin * sh * sw, th, tw]);
  const kernel = b.op('Transpose', [picked], { perm: [1, 0, 2, 3] });
  const phased = conv(b, dy, ys, kernel, [cin * sh * sw, cout, th, tw], { pads: [th - 1, tw - 1, ...sp.extra], kernel_shape: [th, tw] });
  const endPads = [sp.grid[0] * sh - xs[2]! - sp.pads[0], sp.grid[1] * sw - xs[3]! - sp.pads[1]];
  const blocks = b.reshape(phased, [ys[0]!, cin * sh * sw, sp.grid[0] * sp.grid[1]]);
  return b.op('Col2Im', [blocks, b.constI64([xs[2]!, xs[3]!]), b.constI64([sh, sw])], { strides: [sh, sw], pads: [...sp.pads, ...endPads] });
}

/**
 * Input gradient of a strided depthwise 2-D convolution: dy with stride − 1 zeros after every row and column
 * (two Concats with zeros), convolved at stride 1 with the flipped kernel, a depthwise convolution that runs
 * blocked. onnxruntime's ConvTranspose runs image by image and channel by channel: 15.7 ms for MobileNetV2's
 * [128,96,8,8] → 16x16, against ~3 ms for the Concats plus a blocked depthwise convolution (measured).
 */
function depthwiseStridedInputGrad(b: GraphBuilder, dy: string, w: string, xs: number[], ws: number[], ys: number[], strides: number[], pads: number[], dil: number[]): string {
  const [n, c, oh, ow] = ys as [number, number, number, number];
  const [sh, sw] = strides as [number, number];
  let spread = dy;
  if (sw > 1) {
    const zeros = b.op('ConstantOfShape', [b.constI64([n, c, oh, ow, sw - 1])]);
    spread = b.reshape(b.op('Concat', [b.reshape(spread, [n, c, oh, ow, 1]), zeros], { axis: 4 }), [n, c, oh, ow * sw]);
  }
  if (sh > 1) {
    const zeros = b.op('ConstantOfShape', [b.constI64([n, c, oh, sh - 1, ow * sw])]);
    spread = b.reshape(b.op('Concat', [b.reshape(spread, [n, c, oh, 1, ow * sw]), zeros], { axis: 3 }), [n, c, oh * sh, ow * sw]);
  }
  // a stride-1 convolution over the spread map: begin pads (K−1)·d − pad, end pads what makes the input's size
  // (rows of the spread map past it cut off first)
  const kernel = ws.slice(2);
  const begin = kernel.map((k, i) => (k - 1) * dil[i]! - pads[i]!);
  const end = kernel.map((k, i) => xs[2 + i]! + (k - 1) * dil[i]! - begin[i]! - [oh * sh, ow * sw][i]!);
  const spreadSize = [oh * sh, ow * sw].map((d, i) => d + Math.min(0, end[i]!));
  if (end.some((e) => e < 0)) spread = b.slice(spread, [0, 0], spreadSize, [2, 3]);
  const flipped = flippedKernel(b, w, ws, c);
  return conv(b, spread, [n, c, ...spreadSize], flipped, ws, { pads: [...begin, ...end.map((e) => Math.max(0, e))], dilations: dil, group: c, kernel_shape: kernel });
}

/**
 * Col2Im's geometry (2-D blocks): image, block, strides, dilations, begin/end pads, and the number of
 * sliding blocks along each axis, which must multiply to the input's last dimension.
 */
function col2ImGeometry(a: Attrs, image: number[], block: number[]): { strides: number[]; dil: number[]; pads: number[]; blocks: number[] } {
  const strides = a.ints('strides', [1, 1]);
  const dil = a.ints('dilations', [1, 1]);
  const pads = a.ints('pads', [0, 0, 0, 0]);
  const blocks = [0, 1].map((i) => Math.floor((image[i]! + pads[i]! + pads[i + 2]! - ((block[i]! - 1) * dil[i]! + 1)) / strides[i]!) + 1);
  return { strides, dil, pads, blocks };
}

/**
 * The one-hot kernel that moves column row c·K·K + k of an im2col matrix to channel c, kernel offset k:
 * [C·K·K, 1, Kh, Kw], used with group C (Col2Im as a transposed convolution, its adjoint as a convolution).
 */
function blockKernel(channels: number, kh: number, kw: number): Float32Array {
  const kk = kh * kw;
  const w = new Float32Array(channels * kk * kk);
  for (let c = 0; c < channels; c++) for (let k = 0; k < kk; k++) w[(c * kk + k) * kk + k] = 1;
  return w;
}

defineOp({
  type: 'Col2Im',
  forward: {
    unsupported: (n) => (n.inputs.length < 3 ? 'missing image_shape or block_shape' : undefined),
    run(c) {
      const image = c.ints(1);
      const block = c.ints(2);
      if (image.length !== 2 || block.length !== 2) c.unsupported(`${image.length}-D images (only 2-D is implemented)`);
      const [n, ckk, l] = c.shape(0) as [number, number, number];
      const [kh, kw] = block as [number, number];
      if (c.rank(0) !== 3 || ckk % (kh * kw)) c.fail(`input of shape [${c.shape(0)}] is not [N, C·${kh}·${kw}, L]`);
      const g = col2ImGeometry(c.a, image, block);
      if (g.blocks[0]! * g.blocks[1]! !== l) c.fail(`${l} columns, but the image, pads and strides give ${g.blocks[0]}x${g.blocks[1]} blocks`);
      const channels = ckk / (kh * kw);
      // each column row summed back onto its channel and kernel offset: a transposed convolution with a
      // one-hot kernel per channel group, cropped by the pads (output_padding covers rows no block reaches)
      const x4 = tf.reshape(c.f(0), [n, ckk, g.blocks[0]!, g.blocks[1]!]) as tf.Tensor4D;
      const w4 = tf.tensor4d(blockKernel(channels, kh, kw), [ckk, 1, kh, kw]);
      const reach = [0, 1].map((i) => (g.blocks[i]! - 1) * g.strides[i]! + (block[i]! - 1) * g.dil[i]! + 1);
      const outPad = [0, 1].map((i) => image[i]! + g.pads[i]! + g.pads[i + 2]! - reach[i]!);
      const y = nnOps().convTranspose2d(x4, w4, {
        strides: [g.strides[0]!, g.strides[1]!], dilations: [g.dil[0]!, g.dil[1]!],
        pads: [g.pads[0]!, g.pads[1]!, g.pads[2]!, g.pads[3]!], group: channels, outputPadding: [outPad[0]!, outPad[1]!],
      });
      w4.dispose();
      c.checkOutput([n, channels, image[0]!, image[1]!]);
      return [y];
    },
  },
  grad: (g) => {
    // the adjoint gathers the blocks again (im2col): a convolution with the same one-hot kernel
    const [n, ckk] = g.inShape(0) as [number, number];
    const [kh, kw] = g.ints(2) as [number, number];
    const geo = col2ImGeometry(g.a, g.ints(1), [kh, kw]);
    const channels = ckk / (kh * kw);
    const kernel = g.b.constF(blockKernel(channels, kh, kw), [ckk, 1, kh, kw]);
    const cols = g.b.op('Conv', [dy0(g), kernel], { strides: geo.strides, dilations: geo.dil, pads: geo.pads, group: channels, kernel_shape: [kh, kw] });
    return [g.b.reshape(cols, [n, ckk, -1]), undefined, undefined];
  },
  // a sum of its inputs with coefficients 1: monotone, and linear (CROWN's backward pass is the adjoint)
  bounds: { ibp: 'monotone', dataInput0: true, crown: {} },
});

/** W [Cout, Cin/g, K…] → W' [Cin, Cout/g, K…] flipped along every spatial axis (per group). */
function flippedKernel(b: GraphBuilder, w: string, ws: number[], group: number): string {
  const r = ws.length - 2;
  const [cout, cinG] = [ws[0]!, ws[1]!];
  const k = ws.slice(2);
  const taps = k.reduce((p, d) => p * d, 1);
  // flipping every spatial axis reverses the row-major tap index: a GEMM with the anti-identity [taps, taps]
  // (exact: one product by 1 and zeros per output); 0.3-0.4 ms for a 256x256x3x3 kernel in onnxruntime,
  // where a Slice with step −1 moves single floats (3.3-3.6 ms)
  let flipped = w;
  if (taps > 1) {
    const reverse = new Float32Array(taps * taps);
    for (let i = 0; i < taps; i++) reverse[i * taps + (taps - 1 - i)] = 1;
    flipped = b.reshape(b.op('MatMul', [b.reshape(w, [cout * cinG, taps]), b.constF(reverse, [taps, taps])]), ws);
  }
  b.setShape(flipped, ws);
  // then the channel axes exchanged (last, so that the blocked-layout pass can reorder the flipped kernel
  // straight from it, see nchwc.ts)
  if (group === 1) return b.op('Transpose', [flipped], { perm: [1, 0, ...range(2, r + 2)] });
  const g5 = b.reshape(flipped, [group, cout / group, cinG, ...k]);
  return b.reshape(b.op('Transpose', [g5], { perm: [0, 2, 1, ...range(3, r + 3)] }), [cinG * group, cout / group, ...k]);
}

/** Input columns (kernel taps x input channels) from which a filter gradient is one GEMM per image over them. */
const SMALL_IM2COL_ROWS = 32;

/**
 * dW of a convolution: one GEMM per kernel offset, or as a convolution: with batch and channels swapped,
 * the input convolved with the output gradient as kernel (strides and dilations exchange roles) gives dW for
 * every kernel offset. Grouped convolutions put each input channel's batch in its own group.
 */
export function convFilterGrad(
  b: GraphBuilder, x: string, dy: string, xs: number[], ws: number[], ys: number[],
  strides: number[], pads: number[], dil: number[], group: number, blocked: boolean,
): string {
  const r = xs.length - 2;
  const [n, cin] = [xs[0]!, xs[1]!];
  const cout = ws[0]!;
  const kernel = ws.slice(2);
  const perm = [1, 0, ...range(2, r + 2)];
  // the full "kernel" dy spans (O-1)·s+1 input positions; the conv output then has at least K positions
  const cropEnd = kernel.map((k) => k);
  let out: string;
  const taps = kernel.reduce((p, k) => p * k, 1);
  // on blocked-layout kernels the convolution form wins once it has the work to run blocked (its "batch" is
  // the input channels, its output the kernel): 6.1 vs 10.5 ms for a 3x3 64→64 layer on 8x8 maps, 6.6 vs 7.6
  // for 256→256 on 2x2 (onnxruntime 1.30, batch 128, 2 vCPUs with AVX-512), and from 16 input channels of a
  // 3x3 kernel (see BLOCKED_FILTER_GRAD_MIN_WORK)
  const convForm = blocked && cin * taps >= BLOCKED_FILTER_GRAD_MIN_WORK && xs.slice(2).some((d) => d > 1);
  if (group === 1 && r === 2 && taps > cin && cin * taps <= SMALL_IM2COL_ROWS) {
    // a stem on 1-3 channels (3x3 on a grayscale image): the input's columns [N, K·K·Cin, OH·OW] are small,
    // so they are made (a Slice per tap) and one GEMM per image, dy[Cout, OH·OW] × colsᵀ, summed over the
    // batch, gives every tap. The convolution form below has 1-3 "images" and K·K outputs, too little work
    // to run blocked: resnet_small's 1→16 stem took 5.1 ms there, at batch 128
    const [oh, ow] = [ys[2]!, ys[3]!];
    const [kh, kw] = kernel as [number, number];
    const [sh, sw] = strides as [number, number];
    const [dh, dw] = dil as [number, number];
    const padB = (kh - 1) * dh + (oh - 1) * sh + 1 - xs[2]! - pads[0]!;
    const padR = (kw - 1) * dw + (ow - 1) * sw + 1 - xs[3]! - pads[1]!;
    const padAll = [0, 0, pads[0]!, pads[1]!, 0, 0, padB, padR];
    const xp = padAll.every((p) => p === 0) ? x : b.op('Pad', [x, b.constI64(padAll)]);
    const taps2d: string[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        taps2d.push(b.op('Slice', [xp, b.constI64([i * dh, j * dw]), b.constI64([i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1]), b.constI64([2, 3]), b.constI64([sh, sw])]));
      }
    }
    const cols = b.reshape(b.op('Concat', taps2d, { axis: 1 }), [n, taps * cin, oh * ow]); // row t·Cin + c
    const perImage = b.op('MatMul', [b.reshape(dy, [n, cout, oh * ow]), b.op('Transpose', [cols], { perm: [0, 2, 1] })]); // [N, Cout, K·K·Cin]
    const byTap = b.reshape(b.reduce('ReduceSum', perImage, [0], false), [cout, taps, cin]);
    return b.reshape(cin === 1 ? byTap : b.op('Transpose', [byTap], { perm: [0, 2, 1] }), [cout, cin, kh, kw]);
  }
  if (group === 1 && r === 2 && taps <= cin && !convForm) {
    // one GEMM per kernel offset on channels-last input: dW[:, :, kh, kw] = dyᵀ[Cout, N·OH·OW] × x_shift[N·OH·OW, Cin]
    // (1.7x faster in onnxruntime than the convolution form below). With fewer input channels than kernel
    // taps these GEMMs are too narrow and the convolution form, whose GEMM is as wide as the kernel, wins:
    // 7.7 vs 43.6 ms for ResNet-18's 7x7 stride-2 3→64 layer at batch 128
    const [oh, ow] = [ys[2]!, ys[3]!];
    const [kh, kw] = kernel as [number, number];
    let [sh, sw] = strides as [number, number];
    const [dh, dw] = dil as [number, number];
    let [xIn, xh0, xw0] = [x, xs[2]!, xs[3]!];
    if (taps === 1 && pads.every((p) => p === 0) && (sh > 1 || sw > 1)) {
      // a strided 1x1 layer (a ResNet shortcut) reads OH x OW pixels: picked before the channels-last copy,
      // which then moves s² times less (resnet_small's 16→32 shortcut: 6.8 ms of Transpose and 4.0 of Pad
      // on its whole 28x28 input, at batch 128)
      xIn = b.op('Slice', [x, b.constI64([0, 0]), b.constI64([(oh - 1) * sh + 1, (ow - 1) * sw + 1]), b.constI64([2, 3]), b.constI64([sh, sw])]);
      [xh0, xw0, sh, sw] = [oh, ow, 1, 1];
    }
    const needH = (kh - 1) * dh + (oh - 1) * sh + 1;
    const needW = (kw - 1) * dw + (ow - 1) * sw + 1;
    // pad to cover every window (and crop rows no window reads)
    const padB = needH - xh0 - pads[0]!;
    const padR = needW - xw0 - pads[1]!;
    // channels-last first, then pad: onnxruntime's Pad copies contiguous runs, C floats long instead of W
    // (padding NCHW maps of 1-2 pixels cost ~5 ns per element). No Pad or Slice that would copy the whole
    // input unchanged (1x1 layers): onnxruntime copies even then
    const padAll = [0, pads[0]!, pads[1]!, 0, 0, padB, padR, 0];
    const nhwc = b.op('Transpose', [xIn], { perm: [0, 2, 3, 1] });
    const xh = padAll.every((p) => p === 0) ? nhwc : b.op('Pad', [nhwc, b.constI64(padAll)]); // [N, Hp, Wp, Cin]
    const dyT = b.reshape(b.op('Transpose', [dy], { perm }), [cout, -1]);
    const parts: string[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const whole = kh === 1 && kw === 1 && sh === 1 && sw === 1;
        const sl = whole ? xh : b.op('Slice', [xh, b.constI64([i * dh, j * dw]), b.constI64([i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1]), b.constI64([1, 2]), b.constI64([sh, sw])]);
        parts.push(b.unsqueeze(b.op('MatMul', [dyT, b.reshape(sl, [-1, cin])]), [2]));
      }
    }
    return b.reshape(b.op('Concat', parts, { axis: 2 }), [cout, cin, kh, kw]);
  }
  if (group === 1) {
    const xt = b.op('Transpose', [x], { perm }); // [Cin, N, H, W]
    const dyt = b.op('Transpose', [dy], { perm }); // [Cout, N, OH, OW]
    const full = conv(b, xt, [cin, n, ...xs.slice(2)], dyt, [cout, n, ...ys.slice(2)], { strides: dil, dilations: strides, pads, group: 1 }); // [Cin, Cout, K'...]
    const cropped = b.slice(full, new Array(r).fill(0), cropEnd, range(2, r + 2));
    out = b.op('Transpose', [cropped], { perm }); // [Cout, Cin, K...]
  } else if (group === cin && cout === cin) {
    // depthwise: every image's every channel a group of its own, x [1, N·C, H, W] convolved with dy
    // [N·C, 1, OH, OW] as kernel, summed over the batch. No transposes, and a depthwise convolution, which
    // the NCHWc pass runs blocked when N·C is whole blocks: 1.6 ms for [128,144,8,8] against 17 in the
    // grouped form below, and 2.4 against 14 unblocked for [128,96,16,16] at stride 2 (measured, onnxruntime
    // 1.30, batch 128)
    const full = conv(b, b.reshape(x, [1, n * cin, ...xs.slice(2)]), [1, n * cin, ...xs.slice(2)], b.reshape(dy, [n * cin, 1, ...ys.slice(2)]), [n * cin, 1, ...ys.slice(2)], { strides: dil, dilations: strides, pads, group: n * cin });
    const cropped = b.slice(full, new Array(r).fill(0), cropEnd, range(2, r + 2));
    out = b.reshape(b.reduce('ReduceSum', b.reshape(cropped, [n, cin, ...kernel]), [0], false), [cout, 1, ...kernel]);
  } else {
    const cinG = cin / group;
    const coutG = cout / group;
    const xt = b.reshape(b.op('Transpose', [x], { perm }), [1, cin * n, ...xs.slice(2)]); // channel = ci·N + n
    const dyt = b.op('Transpose', [dy], { perm }); // [Cout, N, OH, OW]
    // kernel for input channel ci (group gi = ci / cinG): the gradients of that group's output channels
    const idx: number[] = [];
    for (let ci = 0; ci < cin; ci++) for (let j = 0; j < coutG; j++) idx.push(Math.floor(ci / cinG) * coutG + j);
    const kern = b.op('Gather', [dyt, b.constI64(idx)], { axis: 0 }); // [Cin·coutG, N, OH, OW]
    const full = b.op('Conv', [xt, kern], { strides: dil, dilations: strides, pads, group: cin }); // [1, Cin·coutG, K'...]
    const cropped = b.slice(full, new Array(r).fill(0), cropEnd, range(2, r + 2));
    // [1, Cin·coutG, K] → [g, cinG, coutG, K] → [g, coutG, cinG, K] → [Cout, cinG, K]
    const g5 = b.reshape(cropped, [group, cinG, coutG, ...kernel]);
    const t = b.op('Transpose', [g5], { perm: [0, 2, 1, ...range(3, r + 3)] });
    out = b.reshape(t, [cout, cinG, ...kernel]);
  }
  return out;
}

defineOp({
  type: 'ConvTranspose',
  forward: {
    unsupported: (n) => { const k = kernelRank(n); return k ? spatialRankCheck(k) : undefined; },
    run(c) {
      const x = c.f(0);
      const w = c.f(1);
      if (x.rank !== 3 && x.rank !== 4) c.unsupported(`${x.rank - 2}-D transposed convolution (only 1-D and 2-D are implemented)`);
      const group = c.a.int('group', 1);
      if (x.shape[1] !== w.shape[0]) c.fail(`input has ${x.shape[1]} channels, weight expects ${w.shape[0]}`);
      const kernel = c.a.ints('kernel_shape', w.shape.slice(2));
      const { pads, strides, dilations, outputPadding: outPad, out } = convTransposeWindows(convTransposeAttrs(c.a), x.shape.slice(2), kernel);
      c.checkOutput([x.shape[0]!, w.shape[1]! * group, ...out]);
      const lift = x.rank === 3;
      const x4 = (lift ? tf.expandDims(x, 2) : x) as tf.Tensor4D;
      const w4 = (lift ? tf.expandDims(w, 2) : w) as tf.Tensor4D;
      const p2: Pads2D = lift ? [0, pads[0]!, 0, pads[1]!] : [pads[0]!, pads[1]!, pads[2]!, pads[3]!];
      let y: tf.Tensor = nnOps().convTranspose2d(x4, w4, {
        strides: lift ? [1, strides[0]!] : [strides[0]!, strides[1]!],
        dilations: lift ? [1, dilations[0]!] : [dilations[0]!, dilations[1]!],
        pads: p2, group,
        outputPadding: lift ? [0, outPad[0]!] : [outPad[0]!, outPad[1]!],
      });
      if (c.has(2)) y = tf.add(y, tf.reshape(c.f(2), [1, -1, 1, 1]));
      return [lift ? tf.squeeze(y, [2]) : y];
    },
  },
  grad: (g) => {
    // the adjoint of a transposed convolution is the convolution with the same attributes
    const xs = g.inShape(0);
    const ws = g.inShape(1);
    const ys = g.outShape(0);
    const r = xs.length - 2;
    const group = g.a.int('group', 1);
    const kernel = ws.slice(2);
    // pads of the forward op with the output padding taken out of the end pads: the output is the full
    // transposed convolution cropped by them (a negative pad: rows beyond it)
    const geo = convTransposeWindows(convTransposeAttrs(g.a), xs.slice(2), kernel);
    const { strides, dilations: dil } = geo;
    const pads = geo.pads.map((p, i) => (i < r ? p : p - geo.outputPadding[i - r]!));
    const dyFull = dy0(g);
    // output rows beyond the full transposed convolution (output_padding) receive no input: crop them from
    // the gradient, which leaves non-negative pads
    let dy = dyFull;
    let ysC = ys;
    if (pads.some((p) => p < 0)) {
      const axes = range(2, 2 + r);
      const starts = range(0, r).map((i) => Math.max(0, -pads[i]!));
      const ends = range(0, r).map((i) => ys[2 + i]! - Math.max(0, -pads[i + r]!));
      dy = g.b.slice(dyFull, starts, ends, axes);
      ysC = [ys[0]!, ys[1]!, ...range(0, r).map((i) => ends[i]! - starts[i]!)];
    }
    const padsC = pads.map((p) => Math.max(0, p));
    const dx = g.need(0) ? conv(g.b, dy, ysC, g.x(1), ws, { strides, pads: padsC, dilations: dil, group, kernel_shape: kernel }) : undefined;
    const dw = g.need(1) ? convFilterGrad(g.b, dy, g.x(0), ysC, ws, xs, strides, padsC, dil, group, g.blockedConvs) : undefined;
    const db = g.has(2) && g.need(2) ? g.b.reduce('ReduceSum', dyFull, [0, ...range(2, xs.length)], false) : undefined;
    return [dx, dw, db];
  },
  bounds: CONV_BOUNDS,
  params: {
    slots: [[1, 'weight', true], [2, 'bias', false]],
    fanIn: (w, n) => (w[0]! / ((n.attrs.get('group') as number) ?? 1)) * w.slice(2).reduce((p, d) => p * d, 1),
  },
});

function pool(kind: 'max' | 'avg') {
  return (c: OpCtx) => {
    const x = c.f(0);
    if (x.rank !== 3 && x.rank !== 4) c.unsupported(`${x.rank - 2}-D pooling (only 1-D and 2-D are implemented)`);
    const kernel = c.a.ints('kernel_shape');
    if (!kernel) c.fail(`attribute 'kernel_shape' is required`);
    if (kernel.length !== x.rank - 2) c.fail(`kernel_shape [${kernel}] does not match input rank ${x.rank}`);
    const ceil = c.opset >= 10 && c.a.int('ceil_mode', 0) === 1;
    const s = to2d(spatial(c, x.shape.slice(2), kernel, ceil));
    c.checkOutput([x.shape[0]!, x.shape[1]!, ...s.out]);
    const x4 = (x.rank === 3 ? tf.expandDims(x, 2) : x) as tf.Tensor4D;
    const p = { kernel: s.kernel, strides: s.strides, dilations: s.dilations, pads: s.pads, out: s.out };
    const y = kind === 'max' ? nnOps().maxPool2d(x4, p) : nnOps().avgPool2d(x4, p, c.a.int('count_include_pad', 0) === 1);
    return [x.rank === 3 ? tf.squeeze(y, [2]) : y];
  };
}
defineOp({
  type: 'MaxPool',
  forward: {
    unsupported(n) {
      if (n.outputs.length > 1 && n.outputs[1]) return 'the Indices output';
      const k = kernelRank(n);
      return k ? spatialRankCheck(k) : undefined;
    },
    run: pool('max'),
  },
  grad: (g) => {
    // the forward pass saved the argmax of every window (MaxPool's Indices output, flat over the whole input)
    const xs = g.inShape(0);
    const total = xs.reduce((p, d) => p * d, 1);
    const idx = g.b.reshape(g.y(1), [-1]);
    const flat = g.b.reshape(dy0(g), [-1]);
    const zeros = g.b.op('ConstantOfShape', [g.b.constI64([total])]);
    const dx = g.b.op('ScatterElements', [zeros, idx, flat], { axis: 0, reduction: 'add' });
    return [g.b.reshape(dx, xs)];
  },
  bounds: { ibp: 'monotone', crown: 'max-window' },
});
defineOp({
  type: 'AveragePool',
  forward: {
    unsupported(n) {
      const d = new Attrs(n).ints('dilations');
      if (d && d.some((v) => v !== 1)) return 'dilations';
      const k = kernelRank(n);
      return k ? spatialRankCheck(k) : undefined;
    },
    run: pool('avg'),
  },
  grad: (g) => {
    const xs = g.inShape(0);
    const ys = g.outShape(0);
    const r = xs.length - 2;
    const kernel = g.a.ints('kernel_shape', []);
    const w = gradWindows(g, kernel);
    const { strides, pads } = w;
    const countPad = g.a.int('count_include_pad', 0) === 1;
    // spread dy/divisor over each window with a depthwise ConvTranspose of ones
    const inv = poolDivisors(xs.slice(2), { ...w, out: ys.slice(2) }, countPad);
    const scaled = g.b.op('Mul', [dy0(g), g.b.constF(inv, ys.slice(2))]);
    const c = xs[1]!;
    const ones = g.b.constF(new Float32Array(c * kernel.reduce((p, k) => p * k, 1)).fill(1), [c, 1, ...kernel]);
    // end pads chosen so the transposed conv lands exactly on the input grid (ceil-mode overhang is cropped)
    const tPads = [...pads.slice(0, r)];
    const outPad: number[] = [];
    for (let i = 0; i < r; i++) {
      const end = (ys[2 + i]! - 1) * strides[i]! + kernel[i]! - pads[i]! - xs[2 + i]!;
      tPads.push(Math.max(0, end));
      outPad.push(Math.max(0, -end));
    }
    return [g.b.op('ConvTranspose', [scaled, ones], { strides, pads: tPads, group: c, kernel_shape: kernel, output_padding: outPad })];
  },
  bounds: { ibp: 'monotone', crown: {} },
});
defineOp({
  type: 'GlobalAveragePool',
  forward: { run: (c) => [tf.mean(c.f(0), range(2, c.rank(0)), true)] },
  grad: (g) => {
    const xs = g.inShape(0);
    const area = xs.slice(2).reduce((p, d) => p * d, 1);
    return [g.b.op('Expand', [g.b.op('Div', [dy0(g), g.b.scalarF(area)]), g.b.constI64(xs)])];
  },
  bounds: { ibp: 'monotone', crown: {} },
});
defineOp({
  type: 'GlobalMaxPool',
  forward: { run: (c) => [tf.max(c.f(0), range(2, c.rank(0)), true)] },
  grad: (g) => {
    const xs = g.inShape(0);
    const mask = g.b.op('Cast', [g.b.op('Equal', [g.x(0), g.y(0)])], { to: 1 });
    return [g.b.op('Mul', [mask, g.b.op('Expand', [dy0(g), g.b.constI64(xs)])])];
  },
  bounds: { ibp: 'monotone' },
});

/** Per-channel parameter reshaped to broadcast over (N, C, ...). */
function chan(t: tf.Tensor, rank: number): tf.Tensor {
  return rank <= 2 ? t : tf.reshape(t, [-1, ...new Array(rank - 2).fill(1)]);
}

defineOp({
  type: 'BatchNormalization',
  forward: {
    unsupported(n, opset) {
      if (opset < 9 && new Attrs(n).int('spatial', 1) !== 1) return 'spatial=0';
      return undefined;
    },
    run(c) {
      const x = c.f(0);
      const r = x.rank;
      const eps = c.a.float('epsilon', 1e-5);
      const momentum = c.a.float('momentum', 0.9);
      const scale = chan(c.f(1), r);
      const bias = chan(c.f(2), r);
      const attrTraining = c.opset >= 14 && c.a.int('training_mode', 0) === 1;
      if (!c.training && !attrTraining) {
        // inference form folded into one multiply-add: y = x·a + b
        const a = tf.mul(scale, tf.rsqrt(tf.add(chan(c.f(4), r), eps)));
        const b = tf.sub(bias, tf.mul(chan(c.f(3), r), a));
        return [tf.add(tf.mul(x, a), b)];
      }
      const axes = [0, ...range(2, r)];
      const { mean, variance } = tf.moments(x, axes, true);
      const y = tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), scale), bias);
      // running statistics: running = running·momentum + batch·(1 − momentum) (not part of any loss)
      const runMean = tf.add(tf.mul(c.f(3), momentum), tf.mul(tf.reshape(mean, [-1]), 1 - momentum));
      const runVar = tf.add(tf.mul(c.f(4), momentum), tf.mul(tf.reshape(variance, [-1]), 1 - momentum));
      if (c.training) {
        c.env.updates.set(c.node.inputs[3]!, runMean);
        c.env.updates.set(c.node.inputs[4]!, runVar);
      }
      return [y, runMean, runVar];
    },
  },
  grad: (g) => {
    // inference form (training-mode BN is lowered to primitive ops before differentiation)
    const xs = g.inShape(0);
    const c = xs[1]!;
    const cs = [c, ...new Array(xs.length - 2).fill(1)];
    const eps = g.a.float('epsilon', 1e-5);
    const invStd = g.b.reshape(g.b.op('Reciprocal', [g.b.op('Sqrt', [g.b.op('Add', [g.x(4), g.b.scalarF(eps)])])]), cs);
    const dy = dy0(g);
    const axes = [0, ...range(2, xs.length)];
    const dx = g.need(0) ? g.b.op('Mul', [dy, g.b.op('Mul', [invStd, g.b.reshape(g.x(1), cs)])]) : undefined;
    let dScale: string | undefined;
    if (g.need(1)) {
      const xhat = g.b.op('Mul', [g.b.op('Sub', [g.x(0), g.b.reshape(g.x(3), cs)]), invStd]);
      dScale = g.b.reduce('ReduceSum', g.b.op('Mul', [dy, xhat]), axes, false);
    }
    const dBias = g.need(2) ? g.b.reduce('ReduceSum', dy, axes, false) : undefined;
    return [dx, dScale, dBias, undefined, undefined];
  },
  bounds: { ibp: ibpBatchNorm, crown: { offset: () => true } },
  params: { slots: [[1, 'scale', false], [2, 'bias', false], [3, 'running_mean', false], [4, 'running_var', false]] },
});

/**
 * Per-channel sums over a [..., N, C, spatial...] activation and per-channel values widened to its maps, in
 * forms onnxruntime runs well on small maps. Its broadcasting walks one span of H·W floats per example and
 * channel, so a per-channel Mul on [128,256,2,2] takes 0.36 ms, and 0.035 ms once the per-channel operand
 * is expanded to [C,2,2] (spans of C·H·W); a ReduceSum over the example and spatial axes takes 0.15 ms
 * there, 0.10 as a sum over examples of [N, C·H·W] rows and then over H·W (batch 128, 2 vCPUs, measured).
 * Maps of more than SMALL_MAP pixels keep the plain forms; a map of 1 pixel needs no widening.
 */
const SMALL_MAP = 64;
function smallMapChannelOps(shape: number[], channelAxis: number, axes: number[]): {
  sum: (b: GraphBuilder, t: string) => string;
  expand: (b: GraphBuilder, perChannel: string) => string;
} {
  const lead = shape.slice(0, channelAxis);
  const channels = shape[channelAxis]!;
  const maps = shape.slice(channelAxis + 1);
  const pixels = maps.reduce((p, d) => p * d, 1);
  // the per-channel values' shape: the groups axis kept (if any), examples and maps reduced to 1
  const statShape = [...lead.slice(0, -1), 1, channels, ...maps.map(() => 1)];
  const small = maps.length > 0 && pixels <= SMALL_MAP;
  return {
    sum: (b, t) => {
      if (!small) return b.reduce('ReduceSum', t, axes, true);
      let rows = b.reduce('ReduceSum', b.reshape(t, [...lead, channels * pixels]), [channelAxis - 1], true);
      if (pixels > 1) rows = b.reduce('ReduceSum', b.reshape(rows, [...lead.slice(0, -1), 1, channels, pixels]), [channelAxis + 1], true);
      return b.reshape(rows, statShape);
    },
    expand: (b, perChannel) => (small && pixels > 1 ? b.op('Expand', [perChannel, b.constI64([...statShape.slice(0, channelAxis + 1), ...maps])]) : perChannel),
  };
}

/**
 * BatchNormalization in training mode lowered for the compiled engine: batch statistics over every axis but
 * the channels, y = (x − mean)·k + bias with k = scale/√(var + ε) per channel. Returns the output, the batch
 * mean and (biased) variance for the running statistics, and the region whose gradient is the closed form
 * below instead of the primitives' chain (11-12 passes over the activations with Expand and Sum; 7 here).
 * With `groups` > 1 the batch is that many equal parts, each normalised by its own statistics, as if each
 * were a pass of its own (TRADES' clean and adversarial halves in one call); the statistics returned are
 * the last part's.
 */
export function batchNormTraining(b: GraphBuilder, x: string, scale: string, bias: string, xShape: number[], eps: number, y: string, groups = 1): { mean: string; var: string; region: GradRegion } {
  const rank = xShape.length;
  const grouped = groups > 1;
  if (grouped && xShape[0]! % groups) throw new Error(`a batch of ${xShape[0]} does not split into ${groups} equal parts`);
  // grouped: [G, N/G, C, …], statistics over the part's examples and the spatial axes
  const gShape = grouped ? [groups, xShape[0]! / groups, ...xShape.slice(1)] : xShape;
  const axes = grouped ? [1, ...range(3, rank + 1)] : [0, ...range(2, rank)];
  const cs = [...(grouped ? [1, 1] : []), -1, ...new Array<number>(rank - 2).fill(1)];
  const count = axes.reduce((p, a) => p * gShape[a]!, 1);
  const channelOps = smallMapChannelOps(gShape, grouped ? 2 : 1, axes);
  const first = b.nodes.length;
  const xg = grouped ? b.reshape(x, gShape) : x;
  const perCount = b.scalarF(1 / count);
  const mean = b.op('Mul', [channelOps.sum(b, xg), perCount]);
  const xc = b.op('Sub', [xg, channelOps.expand(b, mean)]);
  const v = b.op('Mul', [channelOps.sum(b, b.op('Mul', [xc, xc])), perCount]);
  const inv = b.op('Reciprocal', [b.op('Sqrt', [b.op('Add', [v, b.scalarF(eps)])])]);
  const k = b.op('Mul', [inv, b.reshape(scale, cs)]);
  const kWide = channelOps.expand(b, k);
  const normed = [b.op('Mul', [xc, kWide]), channelOps.expand(b, b.reshape(bias, cs))];
  if (grouped) b.add('Reshape', [b.op('Add', normed), b.constI64(xShape)], {}, [y]);
  else b.add('Add', normed, {}, [y]);
  // per-channel sums of the parts added up: a parameter's gradient is the sum over the parts
  const perChannel = (gb: GraphBuilder, t: string): string => gb.reshape(grouped ? gb.reduce('ReduceSum', t, [0], false) : t, [-1]);
  const region: GradRegion = {
    first, last: b.nodes.length - 1, inputs: [x, scale, bias], output: y,
    grad: (gb, dy0, fwd, need) => {
      // with x̂ = xc·inv: dbias = Σdy, dscale = inv·Σ(dy·xc), and
      // dx = k·(dy − Σdy/n − x̂·inv·Σ(dy·xc)/n) = k·dy − (k·inv²·Σ(dy·xc)/n)·xc − k·Σdy/n
      const dy = grouped ? gb.reshape(dy0, gShape) : dy0;
      const [xcB, invB, kB] = [fwd(xc), fwd(inv), fwd(k)];
      const sumDy = channelOps.sum(gb, dy);
      const sumDyXc = channelOps.sum(gb, gb.op('Mul', [dy, xcB]));
      let dx: string | undefined;
      if (need(0)) {
        const perN = gb.scalarF(-1 / count);
        const coefXc = gb.op('Mul', [gb.op('Mul', [kB, gb.op('Mul', [invB, invB])]), gb.op('Mul', [sumDyXc, perN])]);
        const shift = gb.op('Mul', [kB, gb.op('Mul', [sumDy, perN])]);
        const wide = (t: string): string => channelOps.expand(gb, t);
        dx = gb.op('Add', [gb.op('Add', [gb.op('Mul', [dy, fwd(kWide)]), gb.op('Mul', [xcB, wide(coefXc)])]), wide(shift)]);
        if (grouped) dx = gb.reshape(dx, xShape);
      }
      return [
        dx,
        need(1) ? perChannel(gb, gb.op('Mul', [sumDyXc, invB])) : undefined,
        need(2) ? perChannel(gb, sumDy) : undefined,
      ];
    },
  };
  if (!grouped) return { mean, var: v, region };
  const last = (t: string): string => b.slice(t, [groups - 1], [groups], [0]);
  return { mean: last(mean), var: last(v), region };
}

/**
 * Gradient of y = x̂·scale + bias with x̂ = (x − mean)/sqrt(var + ε) over `axes` (LayerNormalization:
 * the trailing axes; InstanceNormalization: the spatial axes per example and channel). `scaleShape` is
 * how scale and bias broadcast against x; their gradients sum over the other axes.
 */
function normGrad(g: GradCtx, axes: number[], eps: number, scaleShape: number[]): (string | undefined)[] {
  const xs = g.inShape(0);
  const x = g.x(0);
  const n = axes.reduce((p, a) => p * xs[a]!, 1);
  const mean = g.b.reduce('ReduceMean', x, axes, true);
  const xc = g.b.op('Sub', [x, mean]);
  const invStd = g.b.op('Reciprocal', [g.b.op('Sqrt', [g.b.op('Add', [g.b.reduce('ReduceMean', g.b.op('Mul', [xc, xc]), axes, true), g.b.scalarF(eps)])])]);
  const xhat = g.b.op('Mul', [xc, invStd]);
  const dy = dy0(g);
  const scale = g.b.reshape(g.x(1), scaleShape);
  let dx: string | undefined;
  if (g.need(0)) {
    // dx = invStd·(d − mean(d) − x̂·mean(d·x̂)), d = dy·scale
    const d = g.b.op('Mul', [dy, scale]);
    const m1 = g.b.op('Div', [g.b.reduce('ReduceSum', d, axes, true), g.b.scalarF(n)]);
    const m2 = g.b.op('Div', [g.b.reduce('ReduceSum', g.b.op('Mul', [d, xhat]), axes, true), g.b.scalarF(n)]);
    dx = g.b.op('Mul', [invStd, g.b.op('Sub', [g.b.op('Sub', [d, m1]), g.b.op('Mul', [xhat, m2])])]);
  }
  const others = xs.map((_, i) => i).filter((i) => scaleShape[i] === 1);
  const toParam = (t: string, i: number): string => g.b.reshape(g.b.reduce('ReduceSum', t, others, true), g.inShape(i));
  return [
    dx,
    g.need(1) ? toParam(g.b.op('Mul', [dy, xhat]), 1) : undefined,
    g.has(2) && g.need(2) ? toParam(dy, 2) : undefined,
  ];
}

defineOp({
  type: 'InstanceNormalization',
  forward: {
    run(c) {
      const x = c.f(0);
      const r = x.rank;
      const { mean, variance } = tf.moments(x, range(2, r), true);
      const y = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, c.a.float('epsilon', 1e-5))));
      return [tf.add(tf.mul(y, chan(c.f(1), r)), chan(c.f(2), r))];
    },
  },
  grad: (g) => {
    const xs = g.inShape(0);
    return normGrad(g, range(2, xs.length), g.a.float('epsilon', 1e-5), xs.map((d, i) => (i === 1 ? d : 1)));
  },
  params: { slots: [[1, 'scale', false], [2, 'bias', false]] },
});

defineOp({
  type: 'LayerNormalization',
  forward: {
    run(c) {
      const x = c.f(0);
      const axis = c.axis(c.a.int('axis', -1), x.rank);
      const axes = range(axis, x.rank);
      const { mean, variance } = tf.moments(x, axes, true);
      const inv = tf.rsqrt(tf.add(variance, c.a.float('epsilon', 1e-5)));
      let y = tf.mul(tf.mul(tf.sub(x, mean), inv), c.f(1));
      if (c.has(2)) y = tf.add(y, c.f(2));
      return [y, mean, inv];
    },
  },
  grad: (g) => {
    const xs = g.inShape(0);
    const axis = (g.a.int('axis', -1) + xs.length) % xs.length;
    if (g.dy(1) !== undefined || g.dy(2) !== undefined) throw new Error('LayerNormalization with a differentiated mean or inverse-std output has no gradient rule');
    const axes = range(axis, xs.length);
    return normGrad(g, axes, g.a.float('epsilon', 1e-5), xs.map((d, i) => (i >= axis ? d : 1)));
  },
  params: { slots: [[1, 'scale', false], [2, 'bias', false]] },
});

defineOp({
  type: 'Gemm',
  forward: {
    run(c) {
      let a = c.f(0);
      let b = c.f(1);
      if (a.rank !== 2 || b.rank !== 2) c.fail(`inputs must be matrices, got ranks ${a.rank} and ${b.rank}`);
      const transA = c.a.int('transA', 0) === 1;
      const transB = c.a.int('transB', 0) === 1;
      const k1 = transA ? a.shape[0] : a.shape[1];
      const k2 = transB ? b.shape[1] : b.shape[0];
      if (k1 !== k2) c.fail(`inner dimensions differ: A gives ${k1}, B gives ${k2}`);
      c.checkOutput([transA ? a.shape[1]! : a.shape[0]!, transB ? b.shape[0]! : b.shape[1]!]);
      let y = tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D, transA, transB);
      const alpha = c.a.float('alpha', 1);
      if (alpha !== 1) y = tf.mul(y, alpha);
      if (c.has(2)) {
        const beta = c.a.float('beta', 1);
        const cc = c.f(2);
        y = tf.add(y, beta === 1 ? cc : tf.mul(cc, beta));
      }
      return [y];
    },
  },
  grad: (g) => {
    const alpha = g.a.float('alpha', 1);
    const beta = g.a.float('beta', 1);
    const tA = g.a.int('transA', 0);
    const tB = g.a.int('transB', 0);
    const dy = dy0(g);
    const A = g.x(0);
    const B = g.x(1);
    let dA: string | undefined;
    let dB: string | undefined;
    if (g.need(0)) {
      dA = tA ? g.b.op('Gemm', [B, dy], { alpha: { float: alpha }, transA: tB, transB: 1 }) : g.b.op('Gemm', [dy, B], { alpha: { float: alpha }, transB: tB ? 0 : 1 });
    }
    if (g.need(1)) {
      dB = tB ? g.b.op('Gemm', [dy, A], { alpha: { float: alpha }, transA: 1, transB: tA }) : g.b.op('Gemm', [A, dy], { alpha: { float: alpha }, transA: tA ? 0 : 1 });
    }
    let dC: string | undefined;
    if (g.has(2) && g.need(2)) {
      const scaled = beta === 1 ? dy : g.b.op('Mul', [dy, g.b.scalarF(beta)]);
      dC = reduceTo(g.b, scaled, g.outShape(0), g.inShape(2));
    }
    return [dA, dB, dC];
  },
  bounds: {
    ibp: ibpProduct,
    crown: {
      offset: hasBias,
      unsupported: (n, dep) => (dep[0] && dep[1] ? 'Gemm of two values that depend on the input' : weightsFromInput(n, dep)),
    },
  },
  params: { slots: [[1, 'weight', true], [2, 'bias', false]], fanIn: (w, n) => ((n.attrs.get('transB') as number) === 1 ? w[1]! : w[0]!) },
  quant: (n, isConst) => {
    const attr = (k: string): number => Number((n.attribute ?? []).find((a) => a.name === k)?.i ?? 0);
    return isConst(n.input?.[1] ?? '') && !attr('transA') ? { weightInput: 1, axis: attr('transB') ? 0 : 1 } : undefined;
  },
});

defineOp({
  type: 'MatMul',
  forward: {
    run(c) {
      let a = c.f(0);
      let b = c.f(1);
      const aVec = a.rank === 1;
      const bVec = b.rank === 1;
      if (aVec) a = tf.reshape(a, [1, -1]);
      if (bVec) b = tf.reshape(b, [-1, 1]);
      if (a.shape[a.rank - 1] !== b.shape[b.rank - 2]) c.fail(`inner dimensions differ: [${c.shape(0)}] × [${c.shape(1)}]`);
      c.checkOutput([...broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), `${c.node.label}: `), a.shape[a.rank - 2]!, b.shape[b.rank - 1]!]);
      let y: tf.Tensor;
      if (b.rank === 2 && a.rank > 2) {
        // (…, M, K) × (K, N): one 2-D product
        const lead = a.shape.slice(0, -1);
        y = tf.reshape(tf.matMul(tf.reshape(a, [-1, a.shape[a.rank - 1]!]) as tf.Tensor2D, b as tf.Tensor2D), [...lead, b.shape[1]!]);
      } else {
        // tfjs' BatchMatMul gradient does not sum over broadcast batch dimensions: broadcast explicitly
        // (broadcastTo's gradient does)
        const lead = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), `${c.node.label}: `);
        if (a.rank - 2 !== lead.length || a.shape.slice(0, -2).some((d, i) => d !== lead[i])) a = tf.broadcastTo(a, [...lead, ...a.shape.slice(-2)]);
        if (b.rank - 2 !== lead.length || b.shape.slice(0, -2).some((d, i) => d !== lead[i])) b = tf.broadcastTo(b, [...lead, ...b.shape.slice(-2)]);
        y = tf.matMul(a, b);
      }
      if (aVec) y = tf.squeeze(y, [y.rank - 2]);
      if (bVec) y = tf.squeeze(y, [y.rank - 1]);
      return [y];
    },
  },
  grad: (g) => {
    const as = g.inShape(0);
    const bs = g.inShape(1);
    if (as.length < 2 || bs.length < 2) throw new Error('MatMul with vector operands has no gradient rule');
    const dy = dy0(g);
    const swap = (s: string, rank: number): string => g.b.op('Transpose', [s], { perm: [...range(0, rank - 2), rank - 1, rank - 2] });
    let dA: string | undefined;
    let dB: string | undefined;
    if (g.need(0)) {
      const m = g.b.op('MatMul', [dy, swap(g.x(1), bs.length)]);
      dA = reduceTo(g.b, m, [...g.outShape(0).slice(0, -2), as[as.length - 2]!, as[as.length - 1]!], as);
    }
    if (g.need(1)) {
      if (bs.length === 2 && as.length > 2) {
        // (…, M, K) × (K, N): flatten the batch dims, one product
        const k = as[as.length - 1]!;
        const a2 = g.b.reshape(g.x(0), [-1, k]);
        const d2 = g.b.reshape(dy, [-1, bs[1]!]);
        dB = g.b.op('MatMul', [g.b.op('Transpose', [a2], { perm: [1, 0] }), d2]);
      } else {
        const m = g.b.op('MatMul', [swap(g.x(0), as.length), dy]);
        dB = reduceTo(g.b, m, [...g.outShape(0).slice(0, -2), bs[bs.length - 2]!, bs[bs.length - 1]!], bs);
      }
    }
    return [dA, dB];
  },
  bounds: { ibp: ibpProduct, crown: { unsupported: (_n, dep) => (dep[0] && dep[1] ? 'MatMul of two values that depend on the input' : undefined) } },
  params: { slots: [], constantOperand: true, fanIn: (w) => w[w.length - 2]! },
  quant: (n, isConst, dims) => (isConst(n.input?.[1] ?? '') && dims(n.input![1]!).length === 2 ? { weightInput: 1, axis: 1 } : undefined),
});

defineOp({
  type: 'Dropout',
  forward: {
    run(c) {
      const x = c.val(0);
      let ratio = 0.5;
      let trainingMode = false;
      if (c.opset >= 12) {
        if (c.has(1)) ratio = c.scalar(1);
        if (c.has(2)) trainingMode = c.scalar(2) !== 0;
      } else ratio = c.a.float('ratio', 0.5);
      if ((c.training || trainingMode) && ratio > 0) {
        const t = c.f(0);
        const keep = tf.cast(tf.greaterEqual(tf.randomUniform(t.shape), ratio), 'float32');
        return [tf.div(tf.mul(t, keep), 1 - ratio), tf.cast(keep, 'bool')];
      }
      return [x, tf.cast(tf.onesLike(c.t(0)), 'bool')];
    },
  },
  grad: (g) => [dy0(g)],
  bounds: { ibp: 'monotone', crown: {} },
});
