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
import { BLOCKED_CONV_MIN_WORK } from '../../ops/spec.js';
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
export function withNchwcConvs(src: GraphBuilder, block: number): GraphBuilder {
  if (block < 2 || !src.nodes.some((n) => n.opType === 'Conv' && !n.domain)) return src;
  const constant = constantValues(src);
  const b = src.clone('nchwc');
  const nodes = b.nodes.splice(0);
  let rewritten = 0;
  for (const n of nodes) {
    const done = n.opType === 'Conv' && !n.domain && rewrite(b, n, block, constant);
    if (done) rewritten++;
    else b.nodes.push(n);
  }
  return rewritten ? b : src;
}

function rewrite(b: GraphBuilder, n: NodeProto, block: number, constant: Set<string>): boolean {
  const [x, w, bias] = n.input ?? [];
  if (!x || !w || constant.has(w)) return false;
  const xs = b.knownShape(x);
  const ws = b.knownShape(w);
  if (!xs || !ws || xs.length !== 4 || ws.length !== 4) return false;
  if (xs[2]! * xs[3]! === 1) return false;
  // the filter's reorder costs about as much as a few images' worth of convolution: worth it once batch x
  // output pixels is large (ResNet-18 at 32x32, batch 128: every layer but those on 1x1 maps; not the
  // convolution form of conv1's filter gradient, whose "batch" is its 3 input channels and output 8x8)
  if (xs[0]! * outputPixels(n, xs, ws) < BLOCKED_CONV_MIN_WORK) return false;
  const group = toNum((n.attribute ?? []).find((a) => a.name === 'group')?.i ?? 1);
  const [cout, cinG, kh, kw] = ws as [number, number, number, number];
  const cin = xs[1]!;
  const coutP = roundUp(cout, block);
  let wBlocked: string;
  let xIn: string;
  if (group === 1 && cin < block) {
    // input stays NCHW; filter [O/B, I, H, W, Bo]
    wBlocked = reorderFilter(b, w, [cout, cin, kh, kw], coutP, cin, false, block);
    xIn = x;
  } else if (group === 1 && cin % 4 === 0) {
    // filter [O/B, I/B, H, W, Bi, Bo], both channel counts padded with zeros to whole blocks (ReorderInput
    // takes channel counts that are multiples of 4)
    wBlocked = reorderFilter(b, w, [cout, cin, kh, kw], coutP, roundUp(cin, block), true, block);
    xIn = b.op('ReorderInput', [x], { channels_last: 0 }, NCHWC_DOMAIN);
  } else if (group === cin && cinG === 1 && cout === cin && cin % block === 0) {
    // depthwise: filter [C/B, 1, H, W, B]
    wBlocked = reorderFilter(b, w, [cout, 1, kh, kw], cout, 1, false, block);
    xIn = b.op('ReorderInput', [x], { channels_last: 0 }, NCHWC_DOMAIN);
  } else return false;
  const biasIn = !bias ? [] : [coutP === cout ? bias : b.op('Pad', [bias, b.constI64([0, coutP - cout])])];
  const yBlocked = b.fresh('nchwc');
  b.nodes.push({ ...n, domain: NCHWC_DOMAIN, input: [xIn, wBlocked, ...biasIn], output: [yBlocked], name: `${n.name ?? ''}/nchwc` });
  b.add('ReorderOutput', [yBlocked], { channels: cout, channels_last: 0 }, [n.output![0]!], NCHWC_DOMAIN);
  return true;
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
