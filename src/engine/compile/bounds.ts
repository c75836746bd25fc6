// Interval bound propagation (IBP, Gowal et al. 2018) as an ONNX graph: the compiled forward graph is
// rewritten so that every value depending on the input becomes an interval [l, u] (or centre ± radius for
// affine layers), starting from [max(x−ε, 0), min(x+ε, 1)]. The result is an ordinary graph of Conv, Gemm,
// Abs, Max, … so it differentiates (for IBP training) and runs (for verification) like any other.
// Hand-written: no JS library emits interval graphs for ONNX models.
import type { NodeProto } from '../../onnx/proto.js';
import { Attrs, parseNode } from '../../graph/ir.js';
import { decodeTensor, numberAt } from '../../onnx/tensor.js';
import { gradRule, type GradCtx } from './grad-rules.js';
import { GraphBuilder } from './builder.js';
import { UserError } from '../../util/errors.js';
import { COMPILED_OPSET } from './normalize.js';

export const BOUNDS_EPS = 'bounds/eps';
export const BOUNDS_OUT = 'bounds/logits';
export const BOUNDS_SPEC = 'bounds/spec';

/** The model has an operation that interval bounds cannot pass (named in the message). */
export class BoundsUnsupportedError extends UserError {}

interface Iv { l?: string; u?: string; c?: string; r?: string }

/** ops that map [l, u] to [f(l), f(u)]: monotone non-decreasing in their data input, or pure data movement */
const MONOTONE = new Set([
  'Identity', 'Reshape', 'Flatten', 'Transpose', 'Squeeze', 'Unsqueeze', 'Slice', 'Expand', 'Tile', 'Pad', 'Concat', 'Split',
  'Gather', 'MaxPool', 'GlobalMaxPool', 'AveragePool', 'GlobalAveragePool', 'ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin',
  'Relu', 'Sigmoid', 'Tanh', 'Elu', 'Softplus', 'Erf', 'Exp', 'Clip', 'Sqrt', 'Log', 'Dropout', 'Max', 'Min', 'Celu', 'Selu',
]);
/** ops with their own interval rule in emitBounds (besides MONOTONE); keep in step with its switch */
const IBP_RULES = new Set(['LeakyRelu', 'HardSigmoid', 'Neg', 'Add', 'Sub', 'Mul', 'Div', 'Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'BatchNormalization']);

/** Whether interval (IBP) and CROWN bounds go through `op` (attribute- and input-dependent limits aside). */
export function boundSupport(op: string): { ibp: boolean; crown: boolean } {
  return { ibp: MONOTONE.has(op) || IBP_RULES.has(op), crown: op === 'Relu' || LINEAR.has(op) || AFFINE.has(op) };
}

/** for these only input 0 carries data; the others must be constants */
const DATA_INPUT_0 = new Set(['Reshape', 'Squeeze', 'Unsqueeze', 'Slice', 'Expand', 'Tile', 'Pad', 'Gather', 'ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'Clip', 'Split']);

/**
 * From the nodes of a forward builder (inputs `xName` and parameters, output `logits`), a builder whose
 * output `bounds/logits` is Concat(lower, upper) along the batch axis, with the extra scalar input
 * `bounds/eps`.
 */
export interface CrownOptions {
  /** shapes of every value of the forward graph at the compiled batch size */
  shapes: Map<string, number[]>;
  batch: number;
  classes: number;
}

export function emitBounds(src: GraphBuilder, xName: string, logits: string, shapeOf: (name: string) => number[], crown?: CrownOptions, margins = false): GraphBuilder {
  const b = new GraphBuilder(COMPILED_OPSET, 'ibp');
  for (const i of src.inputs) b.input(i.name, i.dtype, i.shape);
  b.initializers.push(...src.initializers);
  for (const t of src.initializers) b.reserve(t.name ?? '');
  for (const n of src.nodes) for (const o of n.output ?? []) b.reserve(o);
  const eps = b.input(BOUNDS_EPS, 'float32', []);
  const iv = new Map<string, Iv>();
  iv.set(xName, {
    l: b.op('Max', [b.op('Sub', [xName, eps]), b.scalarF(0)]),
    u: b.op('Min', [b.op('Add', [xName, eps]), b.scalarF(1)]),
  });
  const lu = (v: string): [string, string] => {
    const I = iv.get(v)!;
    if (!I.l) {
      I.l = b.op('Sub', [I.c!, I.r!]);
      I.u = b.op('Add', [I.c!, I.r!]);
    }
    return [I.l, I.u!];
  };
  const cr = (v: string): [string, string] => {
    const I = iv.get(v)!;
    if (!I.c) {
      const half = b.scalarF(0.5);
      I.c = b.op('Mul', [b.op('Add', [I.l!, I.u!]), half]);
      I.r = b.op('Mul', [b.op('Sub', [I.u!, I.l!]), half]);
    }
    return [I.c, I.r!];
  };
  const absCache = new Map<string, string>();
  const abs = (w: string): string => {
    let a = absCache.get(w);
    if (!a) absCache.set(w, (a = b.op('Abs', [w])));
    return a;
  };
  const emit = (n: NodeProto, inputs: string[], outputs: string[], attribute = n.attribute): void => {
    b.nodes.push({ ...n, name: b.fresh(`${n.opType}_node`), input: inputs, output: outputs, attribute });
  };
  // (MaxPool's second output holds argmax indices: the '/argmax' suffix marks them int64 for the backward graph)
  const fresh = (outs: string[], tag: string): string[] => outs.map((o, k) => (o ? b.fresh(tag) + (k === 1 && o.endsWith('/argmax') ? '/argmax' : '') : ''));

  src.nodes.forEach((proto, index) => {
    const n = parseNode(proto, index);
    const ins = n.inputs;
    const dep = ins.map((i) => !!i && iv.has(i));
    if (!dep.some(Boolean)) return void b.copy(proto);
    const fail = (why: string): never => {
      throw new BoundsUnsupportedError(`interval bounds (IBP): ${why} at ${n.label}`);
    };
    const op = n.opType;
    const a = new Attrs(n);
    const set = (o: string, I: Iv): void => void iv.set(o, I);
    if (MONOTONE.has(op)) {
      if (DATA_INPUT_0.has(op) && dep.slice(1).some(Boolean)) fail(`${op} with a shape/index input that depends on the input`);
      const lo = fresh(n.outputs, 'l');
      const hi = fresh(n.outputs, 'u');
      emit(proto, ins.map((i) => (i && iv.has(i) ? lu(i)[0] : i)), lo);
      emit(proto, ins.map((i) => (i && iv.has(i) ? lu(i)[1] : i)), hi);
      // (MaxPool's optional second output, the argmax indices the gradient rule reads, is no interval)
      n.outputs.forEach((o, k) => o && !(op === 'MaxPool' && k === 1) && set(o, { l: lo[k], u: hi[k] }));
      return;
    }
    switch (op) {
      case 'LeakyRelu': case 'HardSigmoid': {
        if (a.float('alpha', 0.01) < 0) fail(`${op} with negative alpha`);
        const [l, u] = lu(ins[0]!);
        const lo = b.fresh('l');
        const hi = b.fresh('u');
        emit(proto, [l], [lo]);
        emit(proto, [u], [hi]);
        set(n.outputs[0]!, { l: lo, u: hi });
        return;
      }
      case 'Neg': {
        const [l, u] = lu(ins[0]!);
        set(n.outputs[0]!, { l: b.op('Neg', [u]), u: b.op('Neg', [l]) });
        return;
      }
      case 'Add': case 'Sub': {
        if (dep[0] && dep[1]) {
          const [la, ua] = lu(ins[0]!);
          const [lb, ub] = lu(ins[1]!);
          set(n.outputs[0]!, op === 'Add' ? { l: b.op('Add', [la, lb]), u: b.op('Add', [ua, ub]) } : { l: b.op('Sub', [la, ub]), u: b.op('Sub', [ua, lb]) });
        } else if (dep[0]) {
          const [c, r] = cr(ins[0]!);
          set(n.outputs[0]!, { c: b.op(op, [c, ins[1]!]), r });
        } else {
          const [c, r] = cr(ins[1]!);
          set(n.outputs[0]!, op === 'Add' ? { c: b.op('Add', [ins[0]!, c]), r } : { c: b.op('Sub', [ins[0]!, c]), r });
        }
        return;
      }
      case 'Mul': {
        if (dep[0] && dep[1]) {
          const [la, ua] = lu(ins[0]!);
          const [lb, ub] = lu(ins[1]!);
          const p = [b.op('Mul', [la, lb]), b.op('Mul', [la, ub]), b.op('Mul', [ua, lb]), b.op('Mul', [ua, ub])];
          set(n.outputs[0]!, { l: b.op('Min', p), u: b.op('Max', p) });
        } else {
          const [v, k] = dep[0] ? [ins[0]!, ins[1]!] : [ins[1]!, ins[0]!];
          const [c, r] = cr(v);
          set(n.outputs[0]!, { c: b.op('Mul', [c, k]), r: b.op('Mul', [r, abs(k)]) });
        }
        return;
      }
      case 'Div': {
        if (dep[1]) fail('division by a value that depends on the input');
        const [c, r] = cr(ins[0]!);
        set(n.outputs[0]!, { c: b.op('Div', [c, ins[1]!]), r: b.op('Div', [r, abs(ins[1]!)]) });
        return;
      }
      case 'Conv': case 'ConvTranspose': {
        if (dep[1] || dep[2]) fail(`${op} whose weights depend on the input`);
        const [c, r] = cr(ins[0]!);
        const co = b.fresh('c');
        const ro = b.fresh('r');
        emit(proto, [c, ...ins.slice(1)], [co]);
        emit(proto, [r, abs(ins[1]!)], [ro]);
        set(n.outputs[0]!, { c: co, r: ro });
        return;
      }
      case 'Gemm': case 'MatMul': {
        if (dep[0] && dep[1]) fail(`${op} of two values that depend on the input`);
        if (dep[2]) fail('Gemm bias that depends on the input');
        const k = dep[0] ? 0 : 1;
        const [c, r] = cr(ins[k]!);
        const other = ins[1 - k]!;
        const co = b.fresh('c');
        const ro = b.fresh('r');
        emit(proto, k === 0 ? [c, ...ins.slice(1)] : [ins[0]!, c, ...ins.slice(2)], [co]);
        const attrs = (proto.attribute ?? []).filter((x) => x.name !== 'beta' && x.name !== 'alpha');
        const alpha = a.float('alpha', 1);
        if (op === 'Gemm' && alpha !== 1) attrs.push({ name: 'alpha', type: 1, f: Math.abs(alpha) });
        emit(proto, k === 0 ? [r, abs(other)] : [abs(other), r], [ro], attrs);
        set(n.outputs[0]!, { c: co, r: ro });
        return;
      }
      case 'BatchNormalization': {
        if (dep.slice(1).some(Boolean)) fail('BatchNormalization statistics that depend on the input');
        const [c, r] = cr(ins[0]!);
        const co = b.fresh('c');
        emit(proto, [c, ...ins.slice(1)], [co]);
        // |scale / sqrt(var + ε)| per channel, broadcast over [N, C, …]
        const k = b.op('Div', [ins[1]!, b.op('Sqrt', [b.op('Add', [ins[4]!, b.scalarF(a.float('epsilon', 1e-5))])])]);
        const rank = shapeOf(ins[0]!).length;
        const ka = b.op('Abs', [k]);
        const kb = rank > 2 ? b.op('Unsqueeze', [ka, b.constI64(Array.from({ length: rank - 2 }, (_, i) => i + 1))]) : ka;
        set(n.outputs[0]!, { c: co, r: b.op('Mul', [r, kb]) });
        return;
      }
      default:
        return fail(`no interval rule for ${op}`);
    }
  });
  if (!iv.has(logits)) throw new BoundsUnsupportedError('interval bounds (IBP): the output does not depend on the input');
  if (margins) {
    b.add('Identity', [emitMargins(b, src, logits, iv, lu, cr, shapeOf)], {}, [BOUNDS_OUT]);
    b.setOutputs([BOUNDS_OUT]);
    return b;
  }
  const [l, u] = lu(logits);
  const parts = [l, u];
  if (crown) parts.push(emitCrown(b, src, xName, logits, iv, lu, crown));
  b.add('Concat', parts, { axis: 0 }, [BOUNDS_OUT]);
  b.setOutputs([BOUNDS_OUT]);
  return b;
}

/**
 * IBP lower bounds of the margins spec·logits ([N, classes]; spec `bounds/spec` [N, classes, classes]). When
 * the logits come from a last linear layer (Gemm, MatMul, MatMul + constant Add) the spec is folded into
 * its weights (W' = W·specᵀ per example) and the interval of the layer's input is pushed through W'
 * directly, as IBP papers do (the "elision" of the last layer): tighter than differences of logit bounds.
 * Otherwise lower(spec·z) = spec⁺·l − spec⁻·u from the logit interval.
 */
function emitMargins(b: GraphBuilder, src: GraphBuilder, logits: string, iv: Map<string, Iv>, lu: (v: string) => [string, string], cr: (v: string) => [string, string], shapeOf: (name: string) => number[]): string {
  const [n, k] = shapeOf(logits) as [number, number];
  const spec = b.input(BOUNDS_SPEC, 'float32', [n, k, k]);
  const specT = b.op('Transpose', [spec], { perm: [0, 2, 1] });
  const nodes = src.nodes.map((p, i) => parseNode(p, i));
  const producer = (v: string) => nodes.find((x) => x.outputs.includes(v));
  const constant = (v: string | undefined): boolean => !!v && !iv.has(v);
  const fin = producer(logits);
  let h: string | undefined;
  let w: string | undefined;
  let alpha = 1;
  let bias: string | undefined;
  if (fin?.opType === 'Gemm' && iv.has(fin.inputs[0]!) && constant(fin.inputs[1]) && (!fin.inputs[2] || constant(fin.inputs[2]))) {
    const a = new Attrs(fin);
    if (!a.int('transA', 0)) {
      h = fin.inputs[0]!;
      w = a.int('transB', 0) ? b.op('Transpose', [fin.inputs[1]!], { perm: [1, 0] }) : fin.inputs[1]!;
      alpha = a.float('alpha', 1);
      if (fin.inputs[2]) bias = b.op('Mul', [fin.inputs[2], b.scalarF(a.float('beta', 1))]);
    }
  } else {
    let mm = fin;
    if (fin?.opType === 'Add') {
      const [p0, p1] = fin.inputs as [string, string];
      const [data, other] = iv.has(p0) && constant(p1) ? [p0, p1] : iv.has(p1) && constant(p0) ? [p1, p0] : [undefined, undefined];
      mm = data ? producer(data) : undefined;
      if (mm?.opType === 'MatMul') bias = other;
    }
    if (mm?.opType === 'MatMul' && iv.has(mm.inputs[0]!) && constant(mm.inputs[1]) && shapeOf(mm.inputs[0]!).length === 2 && shapeOf(mm.inputs[1]!).length === 2) {
      h = mm.inputs[0]!;
      w = mm.inputs[1]!;
    } else bias = undefined;
  }
  if (h && w) {
    // W' [N, F, k] = W [F, k] · specᵀ; centre and radius of the layer input through it
    const ws = b.op('MatMul', [w, specT]);
    const [c, r] = cr(h);
    const mc = b.reshape(b.op('MatMul', [b.unsqueeze(c, [1]), ws]), [n, k]);
    const mr = b.reshape(b.op('MatMul', [b.unsqueeze(r, [1]), b.op('Abs', [ws])]), [n, k]);
    let lower = b.op('Sub', [alpha === 1 ? mc : b.op('Mul', [mc, b.scalarF(alpha)]), alpha === 1 ? mr : b.op('Mul', [mr, b.scalarF(Math.abs(alpha))])]);
    if (bias) lower = b.op('Add', [lower, b.reshape(b.op('MatMul', [spec, b.reshape(bias, [k, 1])]), [n, k])]);
    return lower;
  }
  const [l, u] = lu(logits);
  const sp = b.op('Relu', [spec]);
  const sn = b.op('Relu', [b.op('Neg', [spec])]);
  return b.reshape(b.op('Sub', [b.op('MatMul', [sp, b.unsqueeze(l, [2])]), b.op('MatMul', [sn, b.unsqueeze(u, [2])])]), [n, k]);
}

/** ops that are linear maps of their data inputs (no offset) */
const LINEAR = new Set(['Identity', 'Dropout', 'Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Transpose', 'GlobalAveragePool', 'AveragePool', 'ReduceMean', 'ReduceSum', 'Slice', 'Split', 'Neg', 'Expand']);
/** affine ops: a linear map of the data input plus an offset f(0) */
const AFFINE = new Set(['Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'BatchNormalization', 'Add', 'Sub', 'Mul', 'Div', 'Concat', 'Pad']);

/**
 * CROWN (Zhang et al. 2018) lower bounds of the margins spec·logits, the spec fed as `bounds/spec`
 * [N, classes, classes] (row s of example i: e_{y_i} − e_s), propagated backwards from the logits with the
 * interval bounds above as the pre-activation bounds of every ReLU (CROWN-IBP, Zhang et al. 2020).
 * Linear layers map the coefficients back with their own gradient rules (the backward pass of a linear
 * map is its transpose), over a batch of N·classes coefficient rows. Returns the bounds as [N, classes].
 */
function emitCrown(b: GraphBuilder, src: GraphBuilder, xName: string, logits: string, iv: Map<string, Iv>, lu: (v: string) => [string, string], o: CrownOptions): string {
  const { shapes, batch: n, classes: k } = o;
  const rows = n * k;
  const spec = b.input(BOUNDS_SPEC, 'float32', [n, k, k]);
  const asRows = (s: number[]): number[] => [rows, ...s.slice(1)];
  const nodes = src.nodes.map((p, i) => parseNode(p, i));
  const lam = new Map<string, string[]>([[logits, [b.reshape(spec, [rows, k])]]]);
  const lamOf = (v: string): string | undefined => {
    const parts = lam.get(v);
    if (!parts?.length) return undefined;
    if (parts.length > 1) lam.set(v, [b.op('Sum', parts)]);
    return lam.get(v)![0];
  };
  const offsets: string[] = [];
  const reduceRest = (t: string, rank: number): string => (rank > 1 ? b.reduce('ReduceSum', t, Array.from({ length: rank - 1 }, (_, i) => i + 1), false) : t);
  for (let idx = nodes.length - 1; idx >= 0; idx--) {
    const n0 = nodes[idx]!;
    const dep = n0.inputs.map((i) => !!i && iv.has(i));
    if (!dep.some(Boolean)) continue;
    if (!n0.outputs.some((v) => v && lam.has(v))) continue;
    const op = n0.opType;
    const fail = (why: string): never => {
      throw new BoundsUnsupportedError(`CROWN-IBP: ${why} at ${n0.label}; use --objective ibp`);
    };
    if (op === 'Relu') {
      const L = lamOf(n0.outputs[0]!)!;
      const zs = shapes.get(n0.inputs[0]!)!;
      const [lo, hi] = lu(n0.inputs[0]!);
      const R = b.reshape(L, [n, k, ...zs.slice(1)]);
      const uc = b.op('Relu', [hi]);
      const ln = b.op('Relu', [b.op('Neg', [lo])]);
      // upper line through (l, 0) and (u, u); lower line slope 1 when u > −l else 0 (adaptive CROWN)
      const su = b.op('Div', [uc, b.op('Add', [b.op('Add', [uc, ln]), b.scalarF(1e-12)])]);
      const tu = b.op('Mul', [su, ln]);
      const sl = b.op('Cast', [b.op('Greater', [b.op('Add', [hi, lo]), b.scalarF(0)])], { to: 1 });
      const un = (t: string): string => b.unsqueeze(t, [1]);
      const Rp = b.op('Relu', [R]);
      const Rn = b.op('Sub', [R, Rp]);
      const back = b.op('Add', [b.op('Mul', [Rp, un(sl)]), b.op('Mul', [Rn, un(su)])]);
      lam.set(n0.inputs[0]!, [...(lam.get(n0.inputs[0]!) ?? []), b.reshape(back, asRows(zs))]);
      offsets.push(b.reshape(reduceRest(b.reshape(b.op('Mul', [Rn, un(tu)]), [rows, ...zs.slice(1)]), zs.length), [rows]));
      continue;
    }
    if (!LINEAR.has(op) && !AFFINE.has(op)) fail(`no linear relaxation for ${op}`);
    if ((op === 'Mul' || op === 'MatMul' || op === 'Gemm') && dep[0] && dep[1]) fail(`${op} of two values that depend on the input`);
    if (op === 'Div' && dep[1]) fail('division by a value that depends on the input');
    if ((op === 'Gemm' || op === 'Conv' || op === 'ConvTranspose') && !dep[0]) fail(`${op} whose weights depend on the input`);
    const rule = gradRule(op);
    if (!rule) fail(`no backward rule for ${op}`);
    const a = new Attrs(n0);
    const ctx: GradCtx = {
      b, node: n0, a, opset: COMPILED_OPSET,
      x: (i) => n0.inputs[i]!,
      y: (i) => n0.outputs[i]!,
      dy: (i) => (n0.outputs[i] ? lamOf(n0.outputs[i]!) : undefined),
      inShape: (i) => (dep[i] ? asRows(shapes.get(n0.inputs[i]!)!) : shapes.get(n0.inputs[i]!)!),
      outShape: (i) => asRows(shapes.get(n0.outputs[i]!)!),
      need: (i) => dep[i]!,
      ints: (i) => {
        const t = src.initializers.find((x) => x.name === n0.inputs[i]);
        if (!t) fail(`input ${i} is computed at run time`);
        const h = decodeTensor(t!);
        return Array.from({ length: h.data.length }, (_, j) => numberAt(h, j));
      },
      has: (i) => !!n0.inputs[i],
    };
    const grads = rule!(ctx);
    grads.forEach((g, i) => {
      const v = n0.inputs[i];
      if (g && v && dep[i]) lam.set(v, [...(lam.get(v) ?? []), g]);
    });
    if (AFFINE.has(op) && !(op === 'MatMul' || op === 'Mul' || op === 'Div')) {
      // offset f(0): the node with its input-dependent operands set to zero, one example
      if (op === 'Pad' && n0.inputs[2] || op === 'Concat' && dep.some((d) => !d) || op === 'Gemm' && n0.inputs[2] || op === 'Conv' && n0.inputs[2] ||
        op === 'ConvTranspose' && n0.inputs[2] || op === 'BatchNormalization' || ((op === 'Add' || op === 'Sub') && dep.some((d) => !d))) {
        const zeros = n0.inputs.map((v, i) => (v && dep[i] ? b.constF(new Float32Array(shapes.get(v)!.slice(1).reduce((p, d) => p * d, 1)), [1, ...shapes.get(v)!.slice(1)]) : v));
        const f0 = b.fresh('f0');
        b.nodes.push({ ...n0.proto, name: b.fresh(`${op}_f0`), input: zeros, output: [f0] });
        const ys = shapes.get(n0.outputs[0]!)!;
        const L = lamOf(n0.outputs[0]!)!;
        offsets.push(reduceRest(b.op('Mul', [L, f0]), ys.length));
      }
    }
  }
  const Lx = lamOf(xName);
  const xs = shapes.get(xName)!;
  const [xl, xu] = lu(xName);
  let out: string;
  if (!Lx) out = b.constF(new Float32Array(rows), [rows]);
  else {
    const R = b.reshape(Lx, [n, k, ...xs.slice(1)]);
    const Rp = b.op('Relu', [R]);
    const Rn = b.op('Sub', [R, Rp]);
    const lower = b.op('Add', [b.op('Mul', [Rp, b.unsqueeze(xl, [1])]), b.op('Mul', [Rn, b.unsqueeze(xu, [1])])]);
    out = b.reshape(reduceRest(b.reshape(lower, [rows, ...xs.slice(1)]), xs.length), [rows]);
  }
  const total = offsets.length ? b.op('Sum', [out, ...offsets]) : out;
  return b.reshape(total, [n, k]);
}
