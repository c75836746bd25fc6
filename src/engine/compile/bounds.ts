// Interval bound propagation (IBP, Gowal et al. 2018) as an ONNX graph: the compiled forward graph is
// rewritten so that every value depending on the input becomes an interval [l, u] (or centre ± radius for
// affine layers), starting from [max(x−ε, 0), min(x+ε, 1)]. The result is an ordinary graph of Conv, Gemm,
// Abs, Max, … so it differentiates (for IBP training) and runs (for verification) like any other.
// Hand-written: no JS library emits interval graphs for ONNX models.
import type { NodeProto } from '../../onnx/proto.js';
import { Attrs, parseNode } from '../../ops/ir.js';
import { decodeTensor, numberAt } from '../../onnx/tensor.js';
import { COMPILED_OPSET, opSpec, type GradCtx, type Interval } from '../../ops/index.js';
import { GraphBuilder } from '../../onnx/builder.js';
import { UserError } from '../../util/errors.js';

export const BOUNDS_EPS = 'bounds/eps';
export const BOUNDS_OUT = 'bounds/logits';
export const BOUNDS_SPEC = 'bounds/spec';
/** per-element input box of bound graphs made with inputBox 'explicit' (shape of the input) */
export const BOUNDS_LOWER = 'bounds/lower';
export const BOUNDS_UPPER = 'bounds/upper';

/** The model has an operation that interval bounds cannot pass (named in the message). */
export class BoundsUnsupportedError extends UserError {}

type Iv = Interval;

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

/**
 * `inputBox` 'eps' (default): the input interval is [max(x−ε, 0), min(x+ε, 1)] from the inputs x and
 * `bounds/eps`. 'explicit': it is [`bounds/lower`, `bounds/upper`], two inputs of x's shape that replace x
 * and `bounds/eps` (any box, not clipped to [0,1]; e.g. VNN-LIB input boxes).
 */
export function emitBounds(src: GraphBuilder, xName: string, logits: string, shapeOf: (name: string) => number[], crown?: CrownOptions, margins = false, inputBox: 'eps' | 'explicit' = 'eps'): GraphBuilder {
  const b = new GraphBuilder(COMPILED_OPSET, 'ibp');
  for (const i of src.inputs) if (inputBox === 'eps' || i.name !== xName) b.input(i.name, i.dtype, i.shape);
  b.initializers.push(...src.initializers);
  for (const t of src.initializers) b.reserve(t.name ?? '');
  for (const n of src.nodes) for (const o of n.output ?? []) b.reserve(o);
  const iv = new Map<string, Iv>();
  if (inputBox === 'explicit') {
    const xShape = src.inputs.find((i) => i.name === xName)!.shape;
    iv.set(xName, { l: b.input(BOUNDS_LOWER, 'float32', xShape), u: b.input(BOUNDS_UPPER, 'float32', xShape) });
  } else {
    const eps = b.input(BOUNDS_EPS, 'float32', []);
    iv.set(xName, {
      l: b.op('Max', [b.op('Sub', [xName, eps]), b.scalarF(0)]),
      u: b.op('Min', [b.op('Add', [xName, eps]), b.scalarF(1)]),
    });
  }
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
    const rules = opSpec(op)?.bounds;
    if (!rules) return fail(`no interval rule for ${op}`);
    const set = (o: string, I: Iv): void => void iv.set(o, I);
    if (rules.ibp === 'monotone') {
      if (rules.dataInput0 && dep.slice(1).some(Boolean)) fail(`${op} with a shape/index input that depends on the input`);
      const lo = fresh(n.outputs, 'l');
      const hi = fresh(n.outputs, 'u');
      emit(proto, ins.map((i) => (i && iv.has(i) ? lu(i)[0] : i)), lo);
      emit(proto, ins.map((i) => (i && iv.has(i) ? lu(i)[1] : i)), hi);
      // (MaxPool's optional second output, the argmax indices the gradient rule reads, is no interval)
      n.outputs.forEach((o, k) => o && !(op === 'MaxPool' && k === 1) && set(o, { l: lo[k], u: hi[k] }));
      return;
    }
    rules.ibp({
      b, node: n, proto, a: new Attrs(n), dep, lu, cr, abs, set, fail, shapeOf,
      emit: (inputs, outputs, attribute) => emit(proto, inputs, outputs, attribute),
    });
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
    const crown = opSpec(op)?.bounds?.crown;
    if (crown === 'relu') {
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
    if (!crown) return fail(`no linear relaxation for ${op}`);
    const why = crown.unsupported?.(n0, dep);
    if (why) fail(why);
    const rule = opSpec(op)!.grad;
    if (typeof rule !== 'function') return fail(`no backward rule for ${op}`);
    const a = new Attrs(n0);
    const ctx: GradCtx = {
      b, node: n0, a,
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
    const grads = rule(ctx);
    grads.forEach((g, i) => {
      const v = n0.inputs[i];
      if (g && v && dep[i]) lam.set(v, [...(lam.get(v) ?? []), g]);
    });
    if (crown.offset?.(n0, dep)) {
      // offset f(0): the node with its input-dependent operands set to zero, one example
      const zeros = n0.inputs.map((v, i) => (v && dep[i] ? b.constF(new Float32Array(shapes.get(v)!.slice(1).reduce((p, d) => p * d, 1)), [1, ...shapes.get(v)!.slice(1)]) : v));
      const f0 = b.fresh('f0');
      b.nodes.push({ ...n0.proto, name: b.fresh(`${op}_f0`), input: zeros, output: [f0] });
      const ys = shapes.get(n0.outputs[0]!)!;
      const L = lamOf(n0.outputs[0]!)!;
      offsets.push(reduceRest(b.op('Mul', [L, f0]), ys.length));
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
