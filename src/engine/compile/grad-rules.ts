// Gradient rules: for each forward ONNX op, the ONNX nodes computing the gradients of its inputs from the
// gradients of its outputs. Emitted into the backward model (opset 17) and run by onnxruntime.
import { Attrs, type Node } from '../../graph/ir.js';
import type { GraphBuilder } from './builder.js';

export interface GradCtx {
  b: GraphBuilder;
  node: Node;
  a: Attrs;
  /** opset of the forward model (attribute semantics) */
  opset: number;
  /** backward-graph name of forward input i (saved from the forward pass) */
  x(i: number): string;
  /** backward-graph name of forward output k (saved from the forward pass) */
  y(k: number): string;
  /** gradient flowing into output k, if any */
  dy(k: number): string | undefined;
  inShape(i: number): number[];
  outShape(k: number): number[];
  /** does input i need a gradient? */
  need(i: number): boolean;
  /** a constant input's value as numbers (axes, shapes, pads) */
  ints(i: number): number[];
  has(i: number): boolean;
}

export type GradRule = (g: GradCtx) => (string | undefined)[];

const RULES = new Map<string, GradRule>();
function rule(ops: string | string[], r: GradRule): void {
  for (const op of Array.isArray(ops) ? ops : [ops]) RULES.set(op, r);
}
export function gradRule(op: string): GradRule | undefined {
  return RULES.get(op);
}
export function hasGradRule(op: string): boolean {
  return RULES.has(op);
}
/** Ops through which no gradient flows, and why (their rule passes nothing back). */
const NO_GRADIENT = new Map<string, string>();
function noGradient(ops: string[], reason: string): void {
  for (const op of ops) {
    NO_GRADIENT.set(op, reason);
    rule(op, () => []);
  }
}
/** How the compiled engine differentiates `op`: a rule, no gradient (with the reason), or not at all. */
export function gradStatus(op: string): { kind: 'rule' } | { kind: 'none'; reason: string } | undefined {
  const none = NO_GRADIENT.get(op);
  if (none) return { kind: 'none', reason: none };
  return RULES.has(op) ? { kind: 'rule' } : undefined;
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

/** Sum a broadcast gradient back to the shape of the input it came from. */
export function reduceTo(b: GraphBuilder, grad: string, gShape: number[], target: number[]): string {
  if (gShape.join() === target.join()) return grad;
  const off = gShape.length - target.length;
  const axes: number[] = [];
  for (let i = 0; i < gShape.length; i++) {
    if (i < off || (target[i - off] === 1 && gShape[i] !== 1)) axes.push(i);
  }
  const summed = axes.length ? b.reduce('ReduceSum', grad, axes, true) : grad;
  return b.reshape(summed, target);
}

const dy0 = (g: GradCtx): string => g.dy(0)!;
const zero = (g: GradCtx): string => g.b.scalarF(0);

rule(['Identity', 'Cast', 'CastLike'], (g) => [dy0(g)]);
rule(['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze'], (g) => [g.b.reshape(dy0(g), g.inShape(0))]);
rule('Transpose', (g) => {
  const r = g.inShape(0).length;
  const perm = g.a.ints('perm', range(0, r).reverse());
  const inv = new Array<number>(r);
  perm.forEach((p, i) => (inv[p] = i));
  return [g.b.op('Transpose', [dy0(g)], { perm: inv })];
});

rule('Relu', (g) => [g.b.op('Mul', [dy0(g), g.b.op('Cast', [g.b.op('Greater', [g.y(0), zero(g)])], { to: 1 })])]);
rule('LeakyRelu', (g) => {
  const alpha = g.a.float('alpha', 0.01);
  return [g.b.op('Where', [g.b.op('Greater', [g.x(0), zero(g)]), dy0(g), g.b.op('Mul', [dy0(g), g.b.scalarF(alpha)])])];
});
rule('Elu', (g) => {
  const alpha = g.a.float('alpha', 1);
  const neg = g.b.op('Mul', [dy0(g), g.b.op('Add', [g.y(0), g.b.scalarF(alpha)])]);
  return [g.b.op('Where', [g.b.op('Greater', [g.x(0), zero(g)]), dy0(g), neg])];
});
rule('PRelu', (g) => {
  const pos = g.b.op('Greater', [g.x(0), zero(g)]);
  const dx = g.need(0) ? g.b.op('Where', [pos, dy0(g), g.b.op('Mul', [dy0(g), g.x(1)])]) : undefined;
  const ds = g.need(1) ? reduceTo(g.b, g.b.op('Mul', [dy0(g), g.b.op('Min', [g.x(0), zero(g)])]), g.outShape(0), g.inShape(1)) : undefined;
  return [dx, ds];
});
rule('Sigmoid', (g) => {
  const y = g.y(0);
  return [g.b.op('Mul', [dy0(g), g.b.op('Mul', [y, g.b.op('Sub', [g.b.scalarF(1), y])])])];
});
rule('Tanh', (g) => {
  const y = g.y(0);
  return [g.b.op('Mul', [dy0(g), g.b.op('Sub', [g.b.scalarF(1), g.b.op('Mul', [y, y])])])];
});
rule('Softplus', (g) => [g.b.op('Mul', [dy0(g), g.b.op('Sigmoid', [g.x(0)])])]);
rule('Exp', (g) => [g.b.op('Mul', [dy0(g), g.y(0)])]);
rule('Log', (g) => [g.b.op('Div', [dy0(g), g.x(0)])]);
rule('Sqrt', (g) => [g.b.op('Div', [dy0(g), g.b.op('Mul', [g.y(0), g.b.scalarF(2)])])]);
rule('Neg', (g) => [g.b.op('Neg', [dy0(g)])]);
rule('Abs', (g) => [g.b.op('Mul', [dy0(g), g.b.op('Sign', [g.x(0)])])]);
rule('Reciprocal', (g) => [g.b.op('Neg', [g.b.op('Mul', [dy0(g), g.b.op('Mul', [g.y(0), g.y(0)])])])]);
rule('Erf', (g) => {
  const x = g.x(0);
  const e = g.b.op('Exp', [g.b.op('Neg', [g.b.op('Mul', [x, x])])]);
  return [g.b.op('Mul', [dy0(g), g.b.op('Mul', [e, g.b.scalarF(2 / Math.sqrt(Math.PI))])])];
});
rule('Clip', (g) => {
  // gradient passes where min ≤ x ≤ max (as PyTorch's clamp)
  let lo: string | undefined;
  let hi: string | undefined;
  if (g.opset < 11) {
    const mn = g.a.float('min');
    const mx = g.a.float('max');
    if (mn !== undefined) lo = g.b.scalarF(mn);
    if (mx !== undefined) hi = g.b.scalarF(mx);
  } else {
    if (g.has(1)) lo = g.x(1);
    if (g.has(2)) hi = g.x(2);
  }
  let mask: string | undefined;
  if (lo) mask = g.b.op('Not', [g.b.op('Less', [g.x(0), lo])]);
  if (hi) {
    const m2 = g.b.op('Not', [g.b.op('Greater', [g.x(0), hi])]);
    mask = mask ? g.b.op('And', [mask, m2]) : m2;
  }
  return [mask ? g.b.op('Where', [mask, dy0(g), zero(g)]) : dy0(g)];
});
rule('HardSigmoid', (g) => {
  const alpha = g.a.float('alpha', 0.2);
  const beta = g.a.float('beta', 0.5);
  const t = g.b.op('Add', [g.b.op('Mul', [g.x(0), g.b.scalarF(alpha)]), g.b.scalarF(beta)]);
  const inside = g.b.op('And', [g.b.op('Greater', [t, zero(g)]), g.b.op('Less', [t, g.b.scalarF(1)])]);
  return [g.b.op('Where', [inside, g.b.op('Mul', [dy0(g), g.b.scalarF(alpha)]), zero(g)])];
});

function binary(g: GradCtx, da: () => string, db: () => string): (string | undefined)[] {
  const out = g.outShape(0);
  return [g.need(0) ? reduceTo(g.b, da(), out, g.inShape(0)) : undefined, g.need(1) ? reduceTo(g.b, db(), out, g.inShape(1)) : undefined];
}
rule('Add', (g) => binary(g, () => dy0(g), () => dy0(g)));
rule('Sub', (g) => binary(g, () => dy0(g), () => g.b.op('Neg', [dy0(g)])));
rule('Mul', (g) => binary(g, () => g.b.op('Mul', [dy0(g), g.x(1)]), () => g.b.op('Mul', [dy0(g), g.x(0)])));
rule('Div', (g) => binary(g, () => g.b.op('Div', [dy0(g), g.x(1)]), () => g.b.op('Neg', [g.b.op('Div', [g.b.op('Mul', [dy0(g), g.y(0)]), g.x(1)])])));
rule('Pow', (g) => {
  // d/dx x^p = p·x^(p−1); the exponent is a constant in the models we differentiate
  const p = g.x(1);
  const da = g.b.op('Mul', [dy0(g), g.b.op('Mul', [p, g.b.op('Pow', [g.x(0), g.b.op('Sub', [p, g.b.scalarF(1)])])])]);
  return [g.need(0) ? reduceTo(g.b, da, g.outShape(0), g.inShape(0)) : undefined, undefined];
});
rule(['Sum', 'Mean'], (g) => {
  const n = g.node.inputs.length;
  const d = g.node.opType === 'Mean' ? g.b.op('Div', [dy0(g), g.b.scalarF(n)]) : dy0(g);
  return g.node.inputs.map((_, i) => (g.need(i) ? reduceTo(g.b, d, g.outShape(0), g.inShape(i)) : undefined));
});

/** Per-axis explicit pads (begin…, end…) of a conv/pool node, resolving auto_pad like the forward op. */
export function resolvePads(a: Attrs, inSp: number[], kernel: number[], strides: number[], dil: number[], outSp: number[]): number[] {
  const r = inSp.length;
  const autoPad = a.string('auto_pad', 'NOTSET');
  if (autoPad === 'VALID') return new Array(2 * r).fill(0);
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    const pads = new Array<number>(2 * r).fill(0);
    for (let i = 0; i < r; i++) {
      const total = Math.max(0, (outSp[i]! - 1) * strides[i]! + (kernel[i]! - 1) * dil[i]! + 1 - inSp[i]!);
      const small = Math.floor(total / 2);
      pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
      pads[i + r] = total - pads[i]!;
    }
    return pads;
  }
  return a.ints('pads', new Array(2 * r).fill(0));
}

rule('Conv', (g) => {
  const xs = g.inShape(0);
  const ws = g.inShape(1);
  const ys = g.outShape(0);
  const r = xs.length - 2;
  const group = g.a.int('group', 1);
  const kernel = ws.slice(2);
  const strides = g.a.ints('strides', new Array(r).fill(1));
  const dil = g.a.ints('dilations', new Array(r).fill(1));
  const pads = resolvePads(g.a, xs.slice(2), kernel, strides, dil, ys.slice(2));
  const dy = dy0(g);
  let dx: string | undefined;
  if (g.need(0)) {
    // stride 1: the input gradient is a convolution of dy with the flipped, channel-transposed kernel
    // (2-2.5x faster in onnxruntime than ConvTranspose); otherwise ConvTranspose maps back to the input
    // grid, output_padding covering rows the forward conv skipped
    const flipPads = [...range(0, r).map((i) => (kernel[i]! - 1) * dil[i]! - pads[i]!), ...range(0, r).map((i) => xs[2 + i]! - ys[2 + i]! + (kernel[i]! - 1) * dil[i]! - ((kernel[i]! - 1) * dil[i]! - pads[i]!))];
    if (strides.every((s) => s === 1) && flipPads.every((p) => p >= 0)) {
      dx = g.b.op('Conv', [dy, flippedKernel(g.b, g.x(1), ws, group)], { pads: flipPads, dilations: dil, group, kernel_shape: kernel });
    } else if (r === 2 && group === 1 && xs[1]! >= 8 && strides[0] === strides[1] && dil.every((d) => d === 1)) {
      // measured on the small CNN: 5.1 ms vs ConvTranspose's 7.2 ms for 32→16 channels; ConvTranspose stays
      // ahead when the input has few channels (1.2 vs 1.5 ms for the 1-channel input layer)
      dx = subPixelInputGrad(g.b, dy, g.x(1), xs, ws, ys, strides[0]!, pads);
    } else {
      const outPad = range(0, r).map((i) => xs[2 + i]! - ((ys[2 + i]! - 1) * strides[i]! + (kernel[i]! - 1) * dil[i]! + 1 - pads[i]! - pads[i + r]!));
      dx = g.b.op('ConvTranspose', [dy, g.x(1)], { strides, pads, dilations: dil, group, kernel_shape: kernel, output_padding: outPad });
    }
  }
  let dw: string | undefined;
  if (g.need(1)) dw = convFilterGrad(g.b, g.x(0), dy, xs, ws, ys, strides, pads, dil, group);
  const db = g.has(2) && g.need(2) ? g.b.reduce('ReduceSum', dy, [0, ...range(2, xs.length)], false) : undefined;
  return [dx, dw, db];
});

/**
 * Input gradient of a stride-s 2-D convolution without ConvTranspose (slow in onnxruntime): input rows
 * with (row + pad) ≡ ρ (mod s) only meet kernel taps ρ, ρ+s, …, so the gradient is s² stride-1
 * convolutions of dy with those sub-kernels, flipped — one Conv with s²·Cin output channels — interleaved
 * by DepthToSpace and cropped to the input.
 */
function subPixelInputGrad(b: GraphBuilder, dy: string, w: string, xs: number[], ws: number[], ys: number[], s: number, pads: number[]): string {
  const [cout, cin, kh, kw] = ws as [number, number, number, number];
  const jh = Math.ceil(kh / s);
  const jw = Math.ceil(kw / s);
  // W [Cout, Cin, K, K] → zero-pad to [Cout, Cin, J·s, J·s] → [Cout, Cin, Jh, s, Jw, s] → [Cin, s, s, Cout, Jh, Jw]
  const wp = jh * s > kh || jw * s > kw ? b.op('Pad', [w, b.constI64([0, 0, 0, 0, 0, 0, jh * s - kh, jw * s - kw])]) : w;
  const w6 = b.reshape(wp, [cout, cin, jh, s, jw, s]);
  const wt = b.reshape(b.op('Transpose', [w6], { perm: [1, 3, 5, 0, 2, 4] }), [cin * s * s, cout, jh, jw]);
  const wf = b.op('Slice', [wt, b.constI64([-1, -1]), b.constI64([-(2 ** 31), -(2 ** 31)]), b.constI64([2, 3]), b.constI64([-1, -1])]);
  // full correlation: q ranges over [0, O + J − 1), plus rows so the interleaved grid covers pad + input
  const [oh, ow] = [ys[2]!, ys[3]!];
  const [pt, pl] = [pads[0]!, pads[1]!];
  const extraH = Math.max(0, Math.ceil((pt + xs[2]! - s * (oh + jh - 1)) / s));
  const extraW = Math.max(0, Math.ceil((pl + xs[3]! - s * (ow + jw - 1)) / s));
  const full = b.op('Conv', [dy, wf], { pads: [jh - 1, jw - 1, jh - 1 + extraH, jw - 1 + extraW], kernel_shape: [jh, jw] });
  const grid = b.op('DepthToSpace', [full], { blocksize: s, mode: 'CRD' });
  return b.slice(grid, [pt, pl], [pt + xs[2]!, pl + xs[3]!], [2, 3]);
}

/** W [Cout, Cin/g, K…] → W' [Cin, Cout/g, K…] flipped along every spatial axis (per group). */
function flippedKernel(b: GraphBuilder, w: string, ws: number[], group: number): string {
  const r = ws.length - 2;
  const [cout, cinG] = [ws[0]!, ws[1]!];
  const k = ws.slice(2);
  let t: string;
  if (group === 1) t = b.op('Transpose', [w], { perm: [1, 0, ...range(2, r + 2)] });
  else {
    const g5 = b.reshape(w, [group, cout / group, cinG, ...k]);
    t = b.reshape(b.op('Transpose', [g5], { perm: [0, 2, 1, ...range(3, r + 3)] }), [cinG * group, cout / group, ...k]);
  }
  const axes = range(2, r + 2);
  return b.op('Slice', [t, b.constI64(axes.map(() => -1)), b.constI64(axes.map(() => -(2 ** 31))), b.constI64(axes), b.constI64(axes.map(() => -1))]);
}

/**
 * dW of a convolution, as a convolution: with batch and channels swapped, the input convolved with the
 * output gradient as kernel (strides and dilations exchange roles) gives dW for every kernel offset.
 * Grouped convolutions put each input channel's batch in its own group.
 */
export function convFilterGrad(
  b: GraphBuilder, x: string, dy: string, xs: number[], ws: number[], ys: number[],
  strides: number[], pads: number[], dil: number[], group: number,
): string {
  const r = xs.length - 2;
  const [n, cin] = [xs[0]!, xs[1]!];
  const cout = ws[0]!;
  const kernel = ws.slice(2);
  const perm = [1, 0, ...range(2, r + 2)];
  // the full "kernel" dy spans (O-1)·s+1 input positions; the conv output then has at least K positions
  const cropEnd = kernel.map((k) => k);
  let out: string;
  if (group === 1 && r === 2) {
    // one GEMM per kernel offset on channels-last input: dW[:, :, kh, kw] = dyᵀ[Cout, N·OH·OW] × x_shift[N·OH·OW, Cin]
    // (1.7x faster in onnxruntime than the convolution form below)
    const [oh, ow] = [ys[2]!, ys[3]!];
    const [kh, kw] = kernel as [number, number];
    const [sh, sw] = strides as [number, number];
    const [dh, dw] = dil as [number, number];
    const needH = (kh - 1) * dh + (oh - 1) * sh + 1;
    const needW = (kw - 1) * dw + (ow - 1) * sw + 1;
    // pad to cover every window (and crop rows no window reads)
    const padB = needH - xs[2]! - pads[0]!;
    const padR = needW - xs[3]! - pads[1]!;
    const xp = b.op('Pad', [x, b.constI64([0, 0, pads[0]!, pads[1]!, 0, 0, padB, padR])]);
    const xh = b.op('Transpose', [xp], { perm: [0, 2, 3, 1] }); // [N, Hp, Wp, Cin]
    const dyT = b.reshape(b.op('Transpose', [dy], { perm }), [cout, -1]);
    const parts: string[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const sl = b.op('Slice', [xh, b.constI64([i * dh, j * dw]), b.constI64([i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1]), b.constI64([1, 2]), b.constI64([sh, sw])]);
        parts.push(b.unsqueeze(b.op('MatMul', [dyT, b.reshape(sl, [-1, cin])]), [2]));
      }
    }
    return b.reshape(b.op('Concat', parts, { axis: 2 }), [cout, cin, kh, kw]);
  }
  if (group === 1) {
    const xt = b.op('Transpose', [x], { perm }); // [Cin, N, H, W]
    const dyt = b.op('Transpose', [dy], { perm }); // [Cout, N, OH, OW]
    const full = b.op('Conv', [xt, dyt], { strides: dil, dilations: strides, pads, group: 1 }); // [Cin, Cout, K'...]
    const cropped = b.slice(full, new Array(r).fill(0), cropEnd, range(2, r + 2));
    out = b.op('Transpose', [cropped], { perm }); // [Cout, Cin, K...]
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
  void ys;
  return out;
}

rule('ConvTranspose', (g) => {
  // the adjoint of a transposed convolution is the convolution with the same attributes
  const xs = g.inShape(0);
  const ws = g.inShape(1);
  const ys = g.outShape(0);
  const r = xs.length - 2;
  const group = g.a.int('group', 1);
  const kernel = ws.slice(2);
  const strides = g.a.ints('strides', new Array(r).fill(1));
  const dil = g.a.ints('dilations', new Array(r).fill(1));
  // effective pads of the forward op: output = s(in−1) + kd − pb − pe (+ output_padding at the end)
  const pads = new Array<number>(2 * r).fill(0);
  const given = g.a.ints('pads');
  const outPad = g.a.ints('output_padding', new Array(r).fill(0));
  for (let i = 0; i < r; i++) {
    const full = strides[i]! * (xs[2 + i]! - 1) + (kernel[i]! - 1) * dil[i]! + 1 + outPad[i]!;
    const total = full - ys[2 + i]!;
    const begin = given && !g.a.has('output_shape') && g.a.string('auto_pad', 'NOTSET') === 'NOTSET' ? given[i]! : g.a.string('auto_pad', 'NOTSET') === 'SAME_LOWER' ? total - Math.floor(total / 2) : Math.floor(total / 2);
    pads[i] = begin;
    pads[i + r] = total - begin - outPad[i]!;
  }
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
  const dx = g.need(0) ? g.b.op('Conv', [dy, g.x(1)], { strides, pads: padsC, dilations: dil, group, kernel_shape: kernel }) : undefined;
  const dw = g.need(1) ? convFilterGrad(g.b, dy, g.x(0), ysC, ws, xs, strides, padsC, dil, group) : undefined;
  const db = g.has(2) && g.need(2) ? g.b.reduce('ReduceSum', dyFull, [0, ...range(2, xs.length)], false) : undefined;
  return [dx, dw, db];
});

rule('Gemm', (g) => {
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
});

rule('MatMul', (g) => {
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
});

rule('MaxPool', (g) => {
  // the forward pass saved the argmax of every window (MaxPool's Indices output, flat over the whole input)
  const xs = g.inShape(0);
  const total = xs.reduce((p, d) => p * d, 1);
  const idx = g.b.reshape(g.y(1), [-1]);
  const flat = g.b.reshape(dy0(g), [-1]);
  const zeros = g.b.op('ConstantOfShape', [g.b.constI64([total])]);
  const dx = g.b.op('ScatterElements', [zeros, idx, flat], { axis: 0, reduction: 'add' });
  return [g.b.reshape(dx, xs)];
});

rule('AveragePool', (g) => {
  const xs = g.inShape(0);
  const ys = g.outShape(0);
  const r = xs.length - 2;
  const kernel = g.a.ints('kernel_shape', []);
  const strides = g.a.ints('strides', new Array(r).fill(1));
  const pads = resolvePads(g.a, xs.slice(2), kernel, strides, new Array(r).fill(1), ys.slice(2));
  const countPad = g.a.int('count_include_pad', 0) === 1;
  // spread dy/divisor over each window with a depthwise ConvTranspose of ones
  const inv = avgDivisors(xs.slice(2), ys.slice(2), kernel, strides, pads, countPad);
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
});

/** 1/divisor per output position of average pooling, as onnxruntime divides (see engine/nn.ts). */
export function avgDivisors(inSp: number[], outSp: number[], kernel: number[], strides: number[], pads: number[], countPad: boolean): Float32Array {
  const r = inSp.length;
  const per = range(0, r).map((i) =>
    range(0, outSp[i]!).map((o) => {
      const start = o * strides[i]! - pads[i]!;
      const end = Math.min(start + kernel[i]!, inSp[i]! + pads[i + r]!);
      return countPad ? end - start : Math.min(end, inSp[i]!) - Math.max(start, 0);
    }),
  );
  const n = outSp.reduce((p, d) => p * d, 1);
  const out = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    let rem = k;
    let div = 1;
    for (let i = r - 1; i >= 0; i--) {
      div *= per[i]![rem % outSp[i]!]!;
      rem = Math.floor(rem / outSp[i]!);
    }
    out[k] = 1 / Math.max(1, div);
  }
  return out;
}

rule('GlobalAveragePool', (g) => {
  const xs = g.inShape(0);
  const area = xs.slice(2).reduce((p, d) => p * d, 1);
  return [g.b.op('Expand', [g.b.op('Div', [dy0(g), g.b.scalarF(area)]), g.b.constI64(xs)])];
});
rule('GlobalMaxPool', (g) => {
  const xs = g.inShape(0);
  const mask = g.b.op('Cast', [g.b.op('Equal', [g.x(0), g.y(0)])], { to: 1 });
  return [g.b.op('Mul', [mask, g.b.op('Expand', [dy0(g), g.b.constI64(xs)])])];
});

rule('BatchNormalization', (g) => {
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
});

function axesOf(g: GradCtx, rank: number): number[] {
  const op = g.node.opType;
  const fromInput = op === 'ReduceSum' ? g.opset >= 13 : g.opset >= 18;
  let axes = fromInput ? (g.has(1) ? g.ints(1) : []) : g.a.ints('axes', []);
  if (!axes.length) axes = range(0, rank);
  return axes.map((a) => (a < 0 ? a + rank : a)).sort((p, q) => p - q);
}
rule(['ReduceMean', 'ReduceSum'], (g) => {
  const xs = g.inShape(0);
  const axes = axesOf(g, xs.length);
  const keep = g.a.int('keepdims', 1) === 1;
  let d = dy0(g);
  if (!keep) d = g.b.reshape(d, xs.map((v, i) => (axes.includes(i) ? 1 : v)));
  if (g.node.opType === 'ReduceMean') d = g.b.op('Div', [d, g.b.scalarF(axes.reduce((p, a) => p * xs[a]!, 1))]);
  return [g.b.op('Expand', [d, g.b.constI64(xs)])];
});

rule('Concat', (g) => {
  const rank = g.outShape(0).length;
  let axis = g.a.int('axis', 0);
  if (axis < 0) axis += rank;
  const sizes = g.node.inputs.map((_, i) => g.inShape(i)[axis]!);
  const parts = g.b.split(dy0(g), sizes, axis);
  return parts.map((p, i) => (g.need(i) ? p : undefined));
});
rule('Split', (g) => {
  const xs = g.inShape(0);
  let axis = g.a.int('axis', 0);
  if (axis < 0) axis += xs.length;
  const parts = g.node.outputs.map((_, k) => g.dy(k) ?? g.b.op('ConstantOfShape', [g.b.constI64(g.outShape(k))]));
  return [g.b.op('Concat', parts, { axis })];
});
rule('Pad', (g) => {
  const mode = g.a.string('mode', 'constant');
  if (mode !== 'constant') throw new Error(`Pad mode '${mode}' has no gradient rule`);
  const xs = g.inShape(0);
  const r = xs.length;
  const pads = g.opset < 11 ? g.a.ints('pads', []) : g.ints(1);
  if (g.opset >= 18 && g.has(3)) throw new Error('Pad with axes has no gradient rule');
  // the gradient is the inner part: negated pads (cropping where the forward padded)
  void r;
  const out: (string | undefined)[] = [g.b.op('Pad', [dy0(g), g.b.constI64(pads.map((p) => -p))])];
  for (let i = 1; i < g.node.inputs.length; i++) out.push(undefined);
  return out;
});
rule('Slice', (g) => {
  const xs = g.inShape(0);
  const r = xs.length;
  let starts: number[]; let ends: number[]; let axes: number[]; let steps: number[];
  if (g.opset < 10) {
    starts = g.a.ints('starts', []); ends = g.a.ints('ends', []); axes = g.a.ints('axes', starts.map((_, i) => i)); steps = starts.map(() => 1);
  } else {
    starts = g.ints(1); ends = g.ints(2); axes = g.has(3) ? g.ints(3) : starts.map((_, i) => i); steps = g.has(4) ? g.ints(4) : starts.map(() => 1);
  }
  if (steps.every((s) => s === -1) && g.opset >= 10) {
    // full reversals (flipped kernels): the gradient is the reversed gradient
    const full = axes.every((a0, k) => {
      const dim = xs[a0 < 0 ? a0 + r : a0]!;
      const st = starts[k]! < 0 ? starts[k]! + dim : starts[k]!;
      return st >= dim - 1 && ends[k]! <= -dim - 1;
    });
    if (!full) throw new Error('Slice with step −1 over part of an axis has no gradient rule');
    return [g.b.op('Slice', [dy0(g), g.b.constI64(axes.map(() => -1)), g.b.constI64(axes.map(() => -(2 ** 31))), g.b.constI64(axes), g.b.constI64(axes.map(() => -1))])];
  }
  if (steps.some((s) => s < 0)) throw new Error('Slice with a negative step over part of an axis has no gradient rule');
  if (steps.some((s) => s > 1)) {
    // strided (e.g. x[:, 0::2], as Swin's patch merging): per strided axis, the m kept positions s, s+t, …
    // get their gradient, the t−1 between them zeros: [.., m, ..] → [.., m, 1, ..] padded to [.., m, t, ..],
    // flattened to m·t and shifted to start at s (cropped or padded to the axis' size)
    let d = dy0(g);
    let shape = g.outShape(0).slice();
    axes.forEach((a0, k) => {
      const a = a0 < 0 ? a0 + r : a0;
      const dim = xs[a]!;
      const t = steps[k]!;
      const st = Math.min(Math.max(starts[k]! < 0 ? starts[k]! + dim : starts[k]!, 0), dim);
      const m = shape[a]!;
      if (t > 1) {
        d = g.b.reshape(d, [...shape.slice(0, a + 1), 1, ...shape.slice(a + 1)]);
        const p = new Array<number>(2 * (r + 1)).fill(0);
        p[a + 1 + r + 1] = t - 1;
        d = g.b.reshape(g.b.op('Pad', [d, g.b.constI64(p)]), [...shape.slice(0, a), m * t, ...shape.slice(a + 1)]);
      }
      const p2 = new Array<number>(2 * r).fill(0);
      p2[a] = st;
      p2[a + r] = dim - st - m * Math.max(t, 1);
      d = g.b.op('Pad', [d, g.b.constI64(p2)]);
      shape = shape.map((v, i) => (i === a ? dim : v));
    });
    return [d];
  }
  const pads = new Array<number>(2 * r).fill(0);
  axes.forEach((a0, k) => {
    const a = a0 < 0 ? a0 + r : a0;
    const dim = xs[a]!;
    const norm = (v: number): number => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
    const s = norm(starts[k]!);
    const e = Math.max(norm(ends[k]!), s);
    pads[a] = s;
    pads[a + r] = dim - e;
  });
  return [g.b.op('Pad', [dy0(g), g.b.constI64(pads)])];
});

function softmaxAxis(g: GradCtx, rank: number): { axis: number; flat: boolean } {
  if (g.opset < 13) return { axis: (g.a.int('axis', 1) + rank) % rank, flat: true };
  return { axis: (g.a.int('axis', -1) + rank) % rank, flat: false };
}
rule(['Softmax', 'LogSoftmax'], (g) => {
  const ys = g.outShape(0);
  const { axis, flat } = softmaxAxis(g, ys.length);
  let y = g.y(0);
  let dy = dy0(g);
  let ax = axis;
  if (flat) {
    const rows = ys.slice(0, axis).reduce((p, d) => p * d, 1);
    y = g.b.reshape(y, [rows, -1]);
    dy = g.b.reshape(dy, [rows, -1]);
    ax = 1;
  }
  let dx: string;
  if (g.node.opType === 'Softmax') {
    const s = g.b.reduce('ReduceSum', g.b.op('Mul', [dy, y]), [ax], true);
    dx = g.b.op('Mul', [y, g.b.op('Sub', [dy, s])]);
  } else {
    const s = g.b.reduce('ReduceSum', dy, [ax], true);
    dx = g.b.op('Sub', [dy, g.b.op('Mul', [g.b.op('Exp', [y]), s])]);
  }
  return [flat ? g.b.reshape(dx, ys) : dx];
});

rule('Dropout', (g) => [dy0(g)]);
rule('DepthToSpace', (g) => {
  const [n, ch, h, w] = g.inShape(0) as [number, number, number, number];
  const s = g.a.int('blocksize', 1);
  const co = ch / (s * s);
  const d6 = g.b.reshape(dy0(g), [n, co, h, s, w, s]);
  const crd = g.a.string('mode', 'DCR') === 'CRD';
  return [g.b.reshape(g.b.op('Transpose', [d6], { perm: crd ? [0, 1, 3, 5, 2, 4] : [0, 3, 5, 1, 2, 4] }), [n, ch, h, w])];
});
noGradient(['Greater', 'Less', 'Equal', 'GreaterOrEqual', 'LessOrEqual', 'Sign', 'Not', 'And', 'Or', 'Xor'], 'boolean or piecewise-constant output');
rule('Expand', (g) => [reduceTo(g.b, dy0(g), g.outShape(0), g.inShape(0)), undefined]);

// ---- activations without a saved-output shortcut -------------------------------------------------
rule('Selu', (g) => {
  const alpha = g.a.float('alpha', 1.67326319217681884765625);
  const gamma = g.a.float('gamma', 1.05070102214813232421875);
  // x > 0: γ; x ≤ 0: y + γα (y = γα(eˣ − 1))
  const neg = g.b.op('Add', [g.y(0), g.b.scalarF(gamma * alpha)]);
  return [g.b.op('Mul', [dy0(g), g.b.op('Where', [g.b.op('Greater', [g.x(0), zero(g)]), g.b.scalarF(gamma), neg])])];
});
rule('Celu', (g) => {
  const alpha = g.a.float('alpha', 1);
  // x > 0: 1; x ≤ 0: exp(x/α)
  const neg = g.b.op('Exp', [g.b.op('Div', [g.x(0), g.b.scalarF(alpha)])]);
  return [g.b.op('Mul', [dy0(g), g.b.op('Where', [g.b.op('Greater', [g.x(0), zero(g)]), g.b.scalarF(1), neg])])];
});
rule('ThresholdedRelu', (g) => {
  const alpha = g.a.float('alpha', 1);
  return [g.b.op('Where', [g.b.op('Greater', [g.x(0), g.b.scalarF(alpha)]), dy0(g), zero(g)])];
});
rule('Softsign', (g) => {
  const d = g.b.op('Add', [g.b.scalarF(1), g.b.op('Abs', [g.x(0)])]);
  return [g.b.op('Div', [dy0(g), g.b.op('Mul', [d, d])])];
});
rule('HardSwish', (g) => {
  // y = x·clip(x/6 + ½, 0, 1): 0 below −3, 1 above 3, x/3 + ½ between (PyTorch's hardswish_backward)
  const x = g.x(0);
  const mid = g.b.op('Add', [g.b.op('Div', [x, g.b.scalarF(3)]), g.b.scalarF(0.5)]);
  const slope = g.b.op('Where', [g.b.op('Less', [x, g.b.scalarF(-3)]), zero(g), g.b.op('Where', [g.b.op('Greater', [x, g.b.scalarF(3)]), g.b.scalarF(1), mid])]);
  return [g.b.op('Mul', [dy0(g), slope])];
});
rule('Sin', (g) => [g.b.op('Mul', [dy0(g), g.b.op('Cos', [g.x(0)])])]);
rule('Cos', (g) => [g.b.op('Neg', [g.b.op('Mul', [dy0(g), g.b.op('Sin', [g.x(0)])])])]);

// ---- selection ------------------------------------------------------------------------------------
rule('Where', (g) => {
  const out = g.outShape(0);
  const dy = dy0(g);
  const cond = g.x(0);
  return [
    undefined,
    g.need(1) ? reduceTo(g.b, g.b.op('Where', [cond, dy, zero(g)]), out, g.inShape(1)) : undefined,
    g.need(2) ? reduceTo(g.b, g.b.op('Where', [cond, zero(g), dy]), out, g.inShape(2)) : undefined,
  ];
});
rule(['Max', 'Min'], (g) => {
  // the gradient goes to the first input equal to the result (on ties, as the pairwise maximum/minimum that
  // the converter computes: tfjs passes it to the left operand)
  const out = g.outShape(0);
  let taken: string | undefined;
  return g.node.inputs.map((_, i) => {
    const eq = g.b.op('Equal', [g.x(i), g.y(0)]);
    const mine = taken ? g.b.op('And', [eq, g.b.op('Not', [taken])]) : eq;
    taken = taken ? g.b.op('Or', [taken, eq]) : eq;
    return g.need(i) ? reduceTo(g.b, g.b.op('Where', [mine, dy0(g), zero(g)]), out, g.inShape(i)) : undefined;
  });
});
rule('Gather', (g) => {
  // constant indices (the class token x[:, 0], a patch or position lookup): a one-hot matrix E
  // [indices, dim] moves the gradient back, dx = Eᵀ·dy over the gathered axis
  const xs = g.inShape(0);
  const r = xs.length;
  const axis = (g.a.int('axis', 0) + r) % r;
  const dim = xs[axis]!;
  const idx = g.ints(1).map((v) => (v < 0 ? v + dim : v));
  const pre = xs.slice(0, axis).reduce((p, d) => p * d, 1);
  const post = xs.slice(axis + 1).reduce((p, d) => p * d, 1);
  const onehotT = new Float32Array(dim * idx.length);
  idx.forEach((k, j) => (onehotT[k * idx.length + j] = 1));
  const dy3 = g.b.reshape(dy0(g), [pre, idx.length, post]);
  const dx3 = g.b.op('MatMul', [g.b.constF(onehotT, [dim, idx.length]), dy3]);
  return [g.b.reshape(dx3, xs), undefined];
});
rule('GatherElements', (g) => {
  const xs = g.inShape(0);
  const axis = (g.a.int('axis', 0) + xs.length) % xs.length;
  const zeros = g.b.op('ConstantOfShape', [g.b.constI64(xs)]);
  return [g.b.op('ScatterElements', [zeros, g.x(1), dy0(g)], { axis, reduction: 'add' }), undefined];
});
rule('Tile', (g) => {
  // dy viewed as [r0, d0, r1, d1, …]: sum over the repeats
  const xs = g.inShape(0);
  const reps = g.ints(1);
  const dy = g.b.reshape(dy0(g), xs.flatMap((d, i) => [reps[i]!, d]));
  return [g.b.reshape(g.b.reduce('ReduceSum', dy, xs.map((_, i) => 2 * i), false), xs), undefined];
});
rule('SpaceToDepth', (g) => {
  // inverse of the forward [n,c,h/s,s,w/s,s] → [n,s,s,c,h/s,w/s] transpose
  const [n, c, h, w] = g.inShape(0) as [number, number, number, number];
  const s = g.a.int('blocksize', 1);
  const d6 = g.b.reshape(dy0(g), [n, s, s, c, h / s, w / s]);
  return [g.b.reshape(g.b.op('Transpose', [d6], { perm: [0, 3, 4, 1, 5, 2] }), [n, c, h, w])];
});

rule('ScatterND', (g) => {
  // data: dy where nothing was written (reduction none), all of dy (add); updates: dy at the written slices
  const add = g.a.string('reduction', 'none') === 'add';
  const dy = dy0(g);
  const dData = !g.need(0) ? undefined : add ? dy : g.b.op('ScatterND', [dy, g.x(1), g.b.op('ConstantOfShape', [g.b.constI64(g.inShape(2))])]);
  return [dData, undefined, g.need(2) ? g.b.op('GatherND', [dy, g.x(1)]) : undefined];
});

// ---- normalisation ---------------------------------------------------------------------------------
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
rule('LayerNormalization', (g) => {
  const xs = g.inShape(0);
  const axis = (g.a.int('axis', -1) + xs.length) % xs.length;
  if (g.dy(1) !== undefined || g.dy(2) !== undefined) throw new Error('LayerNormalization with a differentiated mean or inverse-std output has no gradient rule');
  const axes = range(axis, xs.length);
  return normGrad(g, axes, g.a.float('epsilon', 1e-5), xs.map((d, i) => (i >= axis ? d : 1)));
});
rule('InstanceNormalization', (g) => {
  const xs = g.inShape(0);
  return normGrad(g, range(2, xs.length), g.a.float('epsilon', 1e-5), xs.map((d, i) => (i === 1 ? d : 1)));
});

// ---- reductions -----------------------------------------------------------------------------------
/** dy of a reduction, reshaped to keep its reduced axes (size 1) so that it broadcasts against x. */
function keptDy(g: GradCtx, axes: number[]): { dy: string; y: string } {
  const xs = g.inShape(0);
  const kept = xs.map((v, i) => (axes.includes(i) ? 1 : v));
  const keep = g.a.int('keepdims', 1) === 1;
  return { dy: keep ? dy0(g) : g.b.reshape(dy0(g), kept), y: keep ? g.y(0) : g.b.reshape(g.y(0), kept) };
}
const reduceRule = (local: (g: GradCtx, x: string, y: string) => string) => (g: GradCtx): (string | undefined)[] => {
  const axes = axesOf(g, g.inShape(0).length);
  const { dy, y } = keptDy(g, axes);
  return [g.b.op('Mul', [dy, local(g, g.x(0), y)]), undefined];
};
// the extremum's gradient goes to the elements equal to it (to each of them on ties, as tfjs)
rule(['ReduceMax', 'ReduceMin'], reduceRule((g, x, y) => g.b.op('Cast', [g.b.op('Equal', [x, y])], { to: 1 })));
rule('ReduceL1', reduceRule((g, x) => g.b.op('Sign', [x])));
rule('ReduceL2', reduceRule((g, x, y) => g.b.op('Div', [x, y])));
rule('ReduceSumSquare', reduceRule((g, x) => g.b.op('Mul', [x, g.b.scalarF(2)])));
rule('ReduceLogSumExp', reduceRule((g, x, y) => g.b.op('Exp', [g.b.op('Sub', [x, y])])));
rule('ReduceLogSum', reduceRule((g, x, y) => g.b.op('Expand', [g.b.op('Exp', [g.b.op('Neg', [y])]), g.b.op('Shape', [x])])));
rule('ReduceProd', reduceRule((g, x, y) => g.b.op('Div', [y, x])));

rule('Mod', (g) => {
  // a − b·q with q = floor(a/b) (fmod 0) or trunc(a/b) (fmod 1): ∂/∂a = 1, ∂/∂b = −q
  const q0 = g.b.op('Div', [g.x(0), g.x(1)]);
  const q = g.a.int('fmod', 0) ? g.b.op('Mul', [g.b.op('Sign', [q0]), g.b.op('Floor', [g.b.op('Abs', [q0])])]) : g.b.op('Floor', [q0]);
  return binary(g, () => dy0(g), () => g.b.op('Neg', [g.b.op('Mul', [dy0(g), q])]));
});

// ---- no gradient: integer or piecewise-constant outputs, or no data input ----------------------------
noGradient(['ArgMax', 'ArgMin', 'Ceil', 'Floor', 'Round', 'Hardmax'], 'piecewise-constant output (zero gradient almost everywhere)');
noGradient(['Shape', 'Size'], 'reads only the shape of its input');
noGradient(['Constant', 'ConstantOfShape', 'Range'], 'no data input (constant output)');
