// Convolutions whose weights are graph values (fed or computed: training, gradients, attacks) run on
// onnxruntime's blocked-layout (NCHWc) kernels. onnxruntime moves a convolution to those kernels itself only
// when the weight is a constant initializer (its NchwcTransformer reorders constants once); with weights fed
// every step the plain kernel runs one small GEMM per image, 1.4-2.2x slower on CIFAR-size ResNet layers
// (measured, batch 128, 2 vCPUs with AVX-512). Here the reorder is written into the graph: the filter is reshaped and
// transposed into the blocked layout (a copy of the weights), the input reordered in, the output reordered
// back to NCHW around each convolution. The blocked layout's channel block is the CPU's (16 with AVX-512,
// 8 with AVX2), read off onnxruntime at run time (see nchwcBlockSize in ort-sync.ts).
import { GraphBuilder } from '../../onnx/builder.js';
import type { NodeProto } from '../../onnx/proto.js';
import { toNum } from '../../onnx/proto.js';
import { windows } from '../../onnx/semantics.js';
import { BLOCKED_CONV_MIN_WORK, BLOCKED_FILTER_GRAD_MIN_WORK } from '../../ops/spec.js';
import { NCHWC_DOMAIN } from '../ort-sync.js';

const roundUp = (c: number, block: number): number => Math.ceil(c / block) * block;

/** Names whose values are fixed when a session is made: initializers, reserved (baked) weights, and what only they feed. */
function constantValues(b: GraphBuilder): Set<string> {
  const produced = new Set<string>();
  for (const n of b.nodes) for (const o of n.output ?? []) produced.add(o);
  const inputs = new Set(b.inputs.map((i) => i.name));
  const constant = new Set<string>(b.initializers.map((t) => t.name ?? ''));
  const isConst = (v: string): boolean => !v || constant.has(v) || (!produced.has(v) && !inputs.has(v));
  for (const n of b.nodes) {
    for (const v of n.input ?? []) if (v && isConst(v)) constant.add(v);
    if ((n.input ?? []).every(isConst)) for (const o of n.output ?? []) constant.add(o);
  }
  return constant;
}

/**
 * A copy of `src` whose eligible Conv nodes run as NCHWc convolutions with channel block `block`:
 * 2-D, weights not constant, and either group 1 (inputs with fewer channels than a block stay NCHW, as
 * onnxruntime does for a network's first layer; others need a multiple of 4) or depthwise (group = channels, one filter each, channels a
 * multiple of the block). Other convolutions, and maps of one pixel (a GEMM is better there), are left.
 */
export function withNchwcConvs(src: GraphBuilder, block: number, outputs: readonly string[]): GraphBuilder {
  if (block < 2 || !src.nodes.some((n) => n.opType === 'Conv' && !n.domain)) return src;
  const constant = constantValues(src);
  const b = src.clone('nchwc');
  const nodes = b.nodes.splice(0);
  const readers = new Map<string, NodeProto[]>();
  for (const n of nodes) for (const v of n.input ?? []) if (v) readers.set(v, [...(readers.get(v) ?? []), n]);
  const kept = new Set(outputs);
  const fromSource = channelTransposedFilters(b, nodes, readers, block, constant, kept);
  // a ReLU that is the only reader of a convolution's output runs inside the blocked convolution (its
  // activation), as onnxruntime's own blocked graphs do: one pass over the activations less
  const fusedRelus = new Set<NodeProto>();
  let rewritten = 0;
  for (const n of nodes) {
    if (n.opType === 'Transpose' && fromSource.has(n.output![0]!)) continue; // its convolution reorders the source
    if (fusedRelus.has(n)) continue;
    const y = n.output?.[0] ?? '';
    const only = readers.get(y);
    const relu = n.opType === 'Conv' && !kept.has(y) && only?.length === 1 && only[0]!.opType === 'Relu' && !only[0]!.domain ? only[0] : undefined;
    const done = n.opType === 'Conv' && !n.domain && rewrite(b, n, block, constant, fromSource, relu?.output?.[0]);
    if (done) {
      rewritten++;
      if (relu) fusedRelus.add(relu);
    } else b.nodes.push(n);
  }
  return rewritten ? b : src;
}

/**
 * Filters that are a channel transpose (Transpose perm [1, 0, 2, 3], the input gradient's flipped kernel) of
 * another value, not a graph output and read only by a convolution that takes the blocked path with both channel counts whole
 * blocks: by transposed filter, its source. The blocked layout is then made from the source directly (two
 * ReorderInputs and a Transpose of whole B·B·H·W runs; 0.75 vs 2.3 ms for 256x256x3x3 with the transpose).
 */
function channelTransposedFilters(b: GraphBuilder, nodes: NodeProto[], readers: Map<string, NodeProto[]>, block: number, constant: Set<string>, kept: Set<string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of nodes) {
    if (n.opType !== 'Transpose' || n.domain) continue;
    const perm = (n.attribute ?? []).find((a) => a.name === 'perm')?.ints?.map(toNum);
    const [src, w] = [n.input![0]!, n.output![0]!];
    const users = readers.get(w) ?? [];
    if (perm?.join() !== '1,0,2,3' || users.length !== 1 || kept.has(w) || b.knownShape(src)?.length !== 4) continue;
    const conv = users[0]!;
    if (conv.opType !== 'Conv' || conv.domain || conv.input?.[1] !== w || plan(b, conv, block, constant) !== 'blocked') continue;
    const [cout, cin] = b.knownShape(w) ?? [];
    if (cout! % block === 0 && cin! % block === 0) out.set(w, src);
  }
  return out;
}

/** Which blocked form a Conv node takes, if any (see withNchwcConvs). */
function plan(b: GraphBuilder, n: NodeProto, block: number, constant: Set<string>): 'nchw-input' | 'blocked' | 'depthwise' | undefined {
  const [x, w] = n.input ?? [];
  if (!x || !w || constant.has(w)) return undefined;
  const xs = b.knownShape(x);
  const ws = b.knownShape(w);
  if (!xs || !ws || xs.length !== 4 || ws.length !== 4) return undefined;
  if (xs[2]! * xs[3]! === 1) return undefined;
  const group = toNum((n.attribute ?? []).find((a) => a.name === 'group')?.i ?? 1);
  const [cout, cinG] = ws as [number, number];
  const cin = xs[1]!;
  // depthwise whatever the work: onnxruntime's plain kernel runs a GEMM per channel and image (a depthwise
  // filter gradient, batch 1 and 3x3 outputs, took 11 ms plain vs 1.6 blocked for 128·144 channels of 8x8)
  if (group === cin && cinG === 1 && cout === cin && cin % block === 0) return 'depthwise';
  // the filter's reorder costs about as much as a few images' worth of convolution: worth it once batch x
  // output pixels is large (ResNet-18 at 32x32, batch 128: every layer but those on 1x1 maps; not the
  // convolution form of conv1's filter gradient, whose "batch" is its 3 input channels and output 8x8)
  const pixels = outputPixels(n, xs, ws);
  const minWork = ws[2]! * ws[3]! > pixels ? BLOCKED_FILTER_GRAD_MIN_WORK : BLOCKED_CONV_MIN_WORK;
  if (xs[0]! * pixels < minWork) return undefined;
  if (group === 1 && cin < block) return 'nchw-input';
  if (group === 1 && cin % 4 === 0) return 'blocked';
  return undefined;
}

/** `reluOutput`: the convolution's output goes through a ReLU of that output name, fused as its activation. */
function rewrite(b: GraphBuilder, n: NodeProto, block: number, constant: Set<string>, fromSource: Map<string, string>, reluOutput?: string): boolean {
  const [x, w, bias] = n.input ?? [];
  const form = plan(b, n, block, constant);
  if (!form || !x || !w) return false;
  const [cout, , kh, kw] = b.knownShape(w) as [number, number, number, number];
  const cin = b.knownShape(x)![1]!;
  const coutP = roundUp(cout, block);
  let wBlocked: string;
  let xIn: string;
  if (form === 'nchw-input') {
    // input stays NCHW; filter [O/B, I, H, W, Bo]
    wBlocked = reorderFilter(b, w, [cout, cin, kh, kw], coutP, cin, false, block);
    xIn = x;
  } else if (form === 'blocked') {
    // filter [O/B, I/B, H, W, Bi, Bo], both channel counts padded with zeros to whole blocks (ReorderInput
    // takes channel counts that are multiples of 4)
    const src = fromSource.get(w);
    wBlocked = src ? reorderTransposedFilter(b, src, [cin, cout, kh, kw], block) : reorderFilter(b, w, [cout, cin, kh, kw], coutP, roundUp(cin, block), true, block);
    xIn = b.op('ReorderInput', [x], { channels_last: 0 }, NCHWC_DOMAIN);
  } else {
    // depthwise: filter [C/B, 1, H, W, B]
    wBlocked = reorderFilter(b, w, [cout, 1, kh, kw], cout, 1, false, block);
    xIn = b.op('ReorderInput', [x], { channels_last: 0 }, NCHWC_DOMAIN);
  }
  const biasIn = !bias ? [] : [coutP === cout ? bias : b.op('Pad', [bias, b.constI64([0, coutP - cout])])];
  const yBlocked = b.fresh('nchwc');
  const activation = reluOutput ? [{ name: 'activation', type: 3, s: Buffer.from('Relu') }] : [];
  let attribute = [...(n.attribute ?? []), ...activation];
  const pads = form === 'blocked' ? padsBeforeBlocked(n, b.knownShape(x)!, [cout, kh, kw]) : undefined;
  if (pads) {
    xIn = padBlocked(b, xIn, b.knownShape(x)!, roundUp(cin, block), pads, block);
    attribute = attribute.filter((a) => a.name !== 'pads');
  }
  b.nodes.push({ ...n, domain: NCHWC_DOMAIN, input: [xIn, wBlocked, ...biasIn], output: [yBlocked], name: `${n.name ?? ''}/nchwc`, attribute });
  b.add('ReorderOutput', [yBlocked], { channels: cout, channels_last: 0 }, [reluOutput ?? n.output![0]!], NCHWC_DOMAIN);
  return true;
}

/** Multiply-adds per padded input value from which a blocked convolution's input is padded first (see padsBeforeBlocked). */
const PREPAD_MIN_MACS_PER_VALUE = 150;

/**
 * The pads [top, left, bottom, right] to write out before a blocked convolution instead of leaving them to
 * it, or undefined. onnxruntime's blocked kernel takes a slower path for every output whose window reaches
 * into the padding; where the kernel's extent exceeds the output in both dimensions (filter gradients in
 * their convolution form: an 8x8 "kernel" of dy over a 3x3 output), every output does. There, padding the
 * blocked input first pays: ResNet-18 layer 1's filter gradient at batch 128 took 4.66 ms of kernels with
 * the convolution's pads, 2.88 with a Pad before it (0.47 of it the Pad); layer 2's, 2.99 and 2.54. A 3x3
 * forward convolution on 8x8 or 4x4 maps gains nothing (1.85-1.96 against 2.25-2.34 ms; measured), nor do
 * depthwise filter gradients (x as [1, N·C, H, W]: the Pad copies whole activations; MobileNetV2's natural
 * step took 12.7 ms of Pads and ran slower), so only group-1 blocked convolutions take it.
 */
function padsBeforeBlocked(n: NodeProto, xs: number[], [cout, kh, kw]: [number, number, number]): number[] | undefined {
  const ints = (name: string, dflt: number[]): number[] => (n.attribute ?? []).find((a) => a.name === name)?.ints?.map(toNum) ?? dflt;
  const autoPad = Buffer.from((n.attribute ?? []).find((a) => a.name === 'auto_pad')?.s ?? []).toString();
  const pads = ints('pads', [0, 0, 0, 0]);
  if ((autoPad && autoPad !== 'NOTSET') || pads.every((v) => v === 0)) return undefined;
  const w = windows({ strides: ints('strides', [1, 1]), dilations: ints('dilations', [1, 1]), pads }, [xs[2]!, xs[3]!], [kh, kw], false, (why) => {
    throw new Error(`blocked convolution '${n.name ?? ''}': ${why}`);
  });
  const out = w.out;
  const coversAll = [0, 1].every((i) => (w.kernel[i]! - 1) * w.dilations[i]! + 1 > out[i]!);
  // the Pad copies the whole input (single-threaded, ~5 GB/s): worth it only for convolutions with many
  // multiply-adds per input value. ResNet-18's filter gradients have 184-512 per padded value (layer 1: 4.66 →
  // 2.41 ms for the convolution, 0.47 for the Pad); the small CNN's conv2 filter gradient, batch 256, has 100
  // (1.41-1.44 → 1.22-1.29 ms for the convolution, 0.68-0.87 for the Pad: the training call ran slower)
  const macs = xs[0]! * cout * out[0]! * out[1]! * xs[1]! * kh * kw;
  const padded = xs[0]! * xs[1]! * (xs[2]! + pads[0]! + pads[2]!) * (xs[3]! + pads[1]! + pads[3]!);
  return coversAll && macs >= PREPAD_MIN_MACS_PER_VALUE * padded ? pads : undefined;
}

/**
 * A blocked input [N, Cb, H, W] (memory [N, Cb/B, H, W, B]) zero-padded spatially, as one Pad on its view
 * [N·Cb/B, H, W·B]: rows of W·B floats (a Pad on NCHW rows of 8 floats was slower than the convolution's own
 * padding; 0.97 against 0.29 ms for [64,128,8,8]).
 */
function padBlocked(b: GraphBuilder, xBlocked: string, xs: number[], channels: number, pads: number[], block: number): string {
  const [n, , h, w] = xs as [number, number, number, number];
  const [top, left, bottom, right] = pads as [number, number, number, number];
  const view = b.reshape(xBlocked, [(n * channels) / block, h, w * block]);
  const padded = b.op('Pad', [view, b.constI64([0, top, left * block, 0, bottom, right * block])]);
  return b.reshape(padded, [n, channels, h + top + bottom, w + left + right]);
}

/** Output pixels of a 2-D convolution (its output shape as ONNX defines it). */
function outputPixels(n: NodeProto, xs: number[], ws: number[]): number {
  const ints = (name: string, dflt: number[]): number[] => (n.attribute ?? []).find((a) => a.name === name)?.ints?.map(toNum) ?? dflt;
  const autoPad = Buffer.from((n.attribute ?? []).find((a) => a.name === 'auto_pad')?.s ?? []).toString();
  const strides = ints('strides', [1, 1]);
  const dil = ints('dilations', [1, 1]);
  const pads = ints('pads', [0, 0, 0, 0]);
  return [0, 1].map((i) => {
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') return Math.ceil(xs[2 + i]! / strides[i]!);
    const span = (ws[2 + i]! - 1) * dil[i]! + 1;
    return Math.max(0, Math.floor((xs[2 + i]! + (autoPad === 'VALID' ? 0 : pads[i]! + pads[i + 2]!) - span) / strides[i]!) + 1);
  }).reduce((p, d) => p * d, 1);
}

/**
 * A filter [O, I, H, W] in the blocked layout, channels zero-padded to `outP` and `inP`: [O/B, I, H, W, Bo],
 * or with `blockIn` [O/B, I/B, H, W, Bi, Bo]. The output block goes innermost by ReorderInput on the filter
 * seen as [O/B, Bo, I, H·W] (one reorder kernel; a general 6-D Transpose moved single floats, 2-4x slower),
 * then Bi moves past H·W in runs of B floats.
 */
function reorderFilter(b: GraphBuilder, w: string, ws: [number, number, number, number], outP: number, inP: number, blockIn: boolean, block: number): string {
  const [o, i, kh, kw] = ws;
  const padded = outP === o && inP === i ? w : b.op('Pad', [w, b.constI64([0, 0, 0, 0, outP - o, inP - i, 0, 0])]);
  const moved = b.op('ReorderInput', [b.reshape(padded, [outP / block, block, inP, kh * kw])], { channels_last: 0 }, NCHWC_DOMAIN); // [O/B, I, HW, Bo]
  if (!blockIn) return b.reshape(moved, [outP, inP, kh, kw]);
  const t = b.op('Transpose', [b.reshape(moved, [(outP / block) * (inP / block), block, kh * kw, block])], { perm: [0, 2, 1, 3] });
  return b.reshape(t, [outP, inP, kh, kw]);
}

/**
 * The blocked layout [O/B, I/B, H, W, Bi, Bo] of the filter F = src with its two channel axes exchanged, from
 * src [I, O, H, W] (both whole blocks): ReorderInput on src seen as [1, I, O, H·W] gives [I/B, O, H·W, Bi],
 * on that seen as [I/B, O, H·W, B] gives [I/B, O/B, H·W, Bi, Bo], and the two block axes swap in runs of
 * B·B·H·W floats.
 */
function reorderTransposedFilter(b: GraphBuilder, src: string, ss: [number, number, number, number], block: number): string {
  const [i, o, kh, kw] = ss;
  const innerIn = b.op('ReorderInput', [b.reshape(src, [1, i, o, kh * kw])], { channels_last: 0 }, NCHWC_DOMAIN);
  const both = b.op('ReorderInput', [b.reshape(innerIn, [i / block, o, kh * kw, block])], { channels_last: 0 }, NCHWC_DOMAIN);
  const t = b.op('Transpose', [b.reshape(both, [i / block, o / block, kh * kw * block * block])], { perm: [1, 0, 2] });
  return b.reshape(t, [o, i, kh, kw]);
}
