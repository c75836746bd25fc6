// Interval bound propagation (IBP, Gowal et al. 2018) as an ONNX graph: the compiled forward graph is
// rewritten so that every value depending on the input becomes an interval [l, u] (or centre ± radius for
// affine layers), starting from [max(x−ε, 0), min(x+ε, 1)]. The result is an ordinary graph of Conv, Gemm,
// Abs, Max, … so it differentiates (for IBP training) and runs (for verification) like any other.
// Hand-written: no JS library emits interval graphs for ONNX models.
import type { NodeProto } from '../../onnx/proto.js';
import { Attrs, parseNode } from '../../ops/ir.js';
import { decodeTensor, hostTensor, numberAt } from '../../onnx/tensor.js';
import { COMPILED_OPSET, opSpec, type GradCtx, type Interval } from '../../ops/index.js';
import { GraphBuilder } from '../../onnx/builder.js';
import { UserError } from '../../util/errors.js';
import { nchwcBlockSize } from '../ort-sync.js';

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
  /**
   * Full CROWN: before each ReLU, its pre-activation bounds are tightened by a CROWN pass of their own
   * (identity specification, the earlier ReLUs already tightened), intersected with IBP, when the layer
   * has at most this many neurons per example (the pass carries 2·neurons coefficient rows per example);
   * larger layers keep their IBP bounds. Unset: CROWN-IBP (IBP bounds for every ReLU).
   */
  intermediate?: number;
  /**
   * relax MaxPool too (verification): its relaxation reads the window argmax through MaxPool's Indices
   * output and ScatterElements, which the engine does not differentiate, so training bounds (CROWN-IBP)
   * reject MaxPool instead
   */
  maxPool?: boolean;
  /**
   * α-CROWN: every ReLU's lower-line slope comes from a graph input `bounds/alpha/<i>` ([N, …neurons],
   * clipped to [0,1]; any slope in [0,1] gives a sound bound), shared by all CROWN passes; the inputs
   * created are listed here so that the caller can optimise them
   */
  alphaInputs?: { name: string; shape: number[]; adaptive?: string }[];
  /**
   * filled in: ReLU layers bounded by CROWN, those left with IBP bounds because of their size, and the
   * most coefficient rows per example any CROWN pass of the graph carries (2·neurons for an intermediate
   * pass, the specification's rows for the final one): what a caller sizes its batch by
   */
  stats?: { crownLayers: number; ibpLayers: number; rowsPerExample?: number };
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
  // before the first ReLU and the second channel-mixing layer, interval bounds in centre/radius form are
  // exact (one linear map, then elementwise affine maps): a CROWN pass would give the same bounds
  let mixingLayers = 0;
  let relusSeen = 0;
  const tightenByCrown = (z: string): void => {
    const zs = crown!.shapes.get(z)!;
    const m = zs.slice(1).reduce((p, d) => p * d, 1);
    if (relusSeen++ === 0 && mixingLayers <= 1) {
      if (crown!.stats) crown!.stats.crownLayers++;
      return;
    }
    if (m > crown!.intermediate!) {
      if (crown!.stats) crown!.stats.ibpLayers++;
      return;
    }
    if (crown!.stats) {
      crown!.stats.crownLayers++;
      crown!.stats.rowsPerExample = Math.max(crown!.stats.rowsPerExample ?? 0, 2 * m);
    }
    const n = crown!.batch;
    // rows [e_j; −e_j] per neuron j: lower bounds of z_j and of −z_j (= −upper)
    const eye = b.op('EyeLike', [b.op('ConstantOfShape', [b.constI64([m, m])], { value: hostTensor('float32', [1], [0]) })]);
    const rows = b.op('Concat', [eye, b.op('Neg', [eye])], { axis: 0 });
    const lam0 = b.reshape(b.op('Expand', [b.unsqueeze(rows, [0]), b.constI64([n, 2 * m, m])]), [n * 2 * m, ...zs.slice(1)]);
    const bound = crownBackward(b, src, xName, z, lam0, 2 * m, iv, lu, crown!, 'CROWN');
    const [lIbp, uIbp] = lu(z);
    const lower = b.reshape(b.slice(bound, [0], [m], [1]), zs);
    const upper = b.reshape(b.op('Neg', [b.slice(bound, [m], [2 * m], [1])]), zs);
    iv.set(z, { l: b.op('Max', [lIbp, lower]), u: b.op('Min', [uIbp, upper]) });
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
    if (op === 'Conv' || op === 'ConvTranspose' || op === 'Gemm' || op === 'MatMul') mixingLayers++;
    else if (dep.filter(Boolean).length > 1) mixingLayers += 2; // a join of two input-dependent values
    const rules = opSpec(op)?.bounds;
    if (!rules) return fail(`no interval rule for ${op}`);
    const set = (o: string, I: Iv): void => void iv.set(o, I);
    if (rules.ibp === 'monotone') {
      if (rules.dataInput0 && dep.slice(1).some(Boolean)) fail(`${op} with a shape/index input that depends on the input`);
      if (crown?.intermediate && rules.crown === 'relu') tightenByCrown(ins[0]!);
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
    const ibpMargins = emitMargins(b, src, logits, iv, lu, cr, shapeOf);
    // both are sound lower bounds: their maximum is, and it is never looser than IBP
    const best = crown ? b.op('Max', [ibpMargins, emitCrown(b, src, xName, logits, iv, lu, crown)]) : ibpMargins;
    b.add('Identity', [best], {}, [BOUNDS_OUT]);
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
  const spec = specInput(b, n, k);
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
  const { batch: n, classes: k } = o;
  if (o.stats) o.stats.rowsPerExample = Math.max(o.stats.rowsPerExample ?? 0, k);
  const spec = specInput(b, n, k);
  return crownBackward(b, src, xName, logits, b.reshape(spec, [n * k, k]), k, iv, lu, o, o.intermediate ? 'CROWN' : 'CROWN-IBP');
}

/** The α-CROWN slope input of the ReLU whose input is `z`, clipped to [0,1] (declared once per ReLU). */
function alphaSlope(b: GraphBuilder, o: CrownOptions, z: string, zs: number[], lo: string, hi: string): string {
  const list = o.alphaInputs!;
  let entry = list.find((a) => a.name.endsWith(`/${z}`));
  if (!entry) {
    // (and CROWN's adaptive slope from the first pass's bounds, where the optimisation starts)
    entry = { name: `bounds/alpha/${list.length}/${z}`, shape: zs, adaptive: b.op('Cast', [b.op('Greater', [b.op('Add', [hi, lo]), b.scalarF(0)])], { to: 1 }) };
    list.push(entry);
    b.input(entry.name, 'float32', zs);
  }
  return b.op('Clip', [entry.name, b.scalarF(0), b.scalarF(1)]);
}

/** The margin specification input `bounds/spec` [N, classes, classes], declared once per graph. */
function specInput(b: GraphBuilder, n: number, k: number): string {
  if (!b.inputs.some((i) => i.name === BOUNDS_SPEC)) b.input(BOUNDS_SPEC, 'float32', [n, k, k]);
  return BOUNDS_SPEC;
}

/**
 * Lower bounds [N, S] of Σ λ·v over the input box, for coefficients `lam0` [N·S, …shape of v] (S rows per
 * example), propagated backwards from v to the input: ReLUs relaxed by two lines from their current
 * pre-activation bounds, every other operator linear or affine (its gradient rule maps the coefficients
 * back; its offset f(0) is added).
 */
function crownBackward(b: GraphBuilder, src: GraphBuilder, xName: string, start: string, lam0: string, S: number, iv: Map<string, Iv>, lu: (v: string) => [string, string], o: CrownOptions, method: string): string {
  const { shapes, batch: n } = o;
  const k = S;
  const rows = n * S;
  const asRows = (s: number[]): number[] => [rows, ...s.slice(1)];
  const nodes = src.nodes.map((p, i) => parseNode(p, i));
  const lam = new Map<string, string[]>([[start, [lam0]]]);
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
      throw new BoundsUnsupportedError(`${method}: ${why} at ${n0.label}${method === 'CROWN-IBP' ? '; use --objective ibp' : ''}`);
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
      let sl: string;
      if (o.alphaInputs) {
        // α only for unstable neurons: a stable one keeps its exact slope (1 when l ≥ 0, 0 when u ≤ 0)
        const active = b.op('Cast', [b.op('Not', [b.op('Less', [lo, b.scalarF(0)])])], { to: 1 });
        const alive = b.op('Cast', [b.op('Greater', [hi, b.scalarF(0)])], { to: 1 });
        sl = b.op('Max', [b.op('Min', [alphaSlope(b, o, n0.inputs[0]!, zs, lo, hi), alive]), active]);
      } else sl = b.op('Cast', [b.op('Greater', [b.op('Add', [hi, lo]), b.scalarF(0)])], { to: 1 });
      const un = (t: string): string => b.unsqueeze(t, [1]);
      const Rp = b.op('Relu', [R]);
      const Rn = b.op('Sub', [R, Rp]);
      const back = b.op('Add', [b.op('Mul', [Rp, un(sl)]), b.op('Mul', [Rn, un(su)])]);
      lam.set(n0.inputs[0]!, [...(lam.get(n0.inputs[0]!) ?? []), b.reshape(back, asRows(zs))]);
      offsets.push(b.reshape(reduceRest(b.reshape(b.op('Mul', [Rn, un(tu)]), [rows, ...zs.slice(1)]), zs.length), [rows]));
      continue;
    }
    if (crown === 'max-window' && o.maxPool) {
      // below: y ≥ the window's element with the largest lower bound; above: y ≤ the largest upper bound
      // (a constant). MaxPool's Indices are flat over the whole [N, C, H, W] input.
      const L = lamOf(n0.outputs[0]!)!;
      const zs = shapes.get(n0.inputs[0]!)!;
      const ys = shapes.get(n0.outputs[0]!)!;
      const [lo, hi] = lu(n0.inputs[0]!);
      const idx = b.fresh('argmax') + '/argmax';
      b.nodes.push({ ...n0.proto, name: b.fresh('MaxPool_lower'), input: [lo], output: [b.fresh('maxl'), idx] });
      const top = b.fresh('maxu');
      b.nodes.push({ ...n0.proto, name: b.fresh('MaxPool_upper'), input: [hi], output: [top] });
      const inner = zs.slice(1).reduce((p, d) => p * d, 1);
      const outInner = ys.slice(1).reduce((p, d) => p * d, 1);
      const local = b.op('Sub', [b.reshape(idx, [n, 1, outInner]), b.constI64(Array.from({ length: n }, (_, i) => i * inner), [n, 1, 1])]);
      const R = b.reshape(L, [n, k, outInner]);
      const Rp = b.op('Relu', [R]);
      const Rn = b.op('Sub', [R, Rp]);
      const at = b.reshape(b.op('Expand', [local, b.constI64([n, k, outInner])]), [rows, outInner]);
      const zeros = b.op('ConstantOfShape', [b.constI64([rows, inner])], { value: hostTensor('float32', [1], [0]) });
      const back = b.op('ScatterElements', [zeros, at, b.reshape(Rp, [rows, outInner])], { axis: 1, reduction: 'add' });
      lam.set(n0.inputs[0]!, [...(lam.get(n0.inputs[0]!) ?? []), b.reshape(back, asRows(zs))]);
      offsets.push(b.reshape(b.reduce('ReduceSum', b.op('Mul', [Rn, b.reshape(top, [n, 1, outInner])]), [2], false), [rows]));
      continue;
    }
    if (!crown || crown === 'max-window') return fail(`no linear relaxation for ${op}`);
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
      blockedConvs: nchwcBlockSize() > 0,
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
