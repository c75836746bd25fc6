// Interval bound propagation (IBP, Gowal et al. 2018) as an ONNX graph: the compiled forward graph is
// rewritten so that every value depending on the input becomes an interval [l, u] (or centre ± radius for
// affine layers), starting from [max(x−ε, 0), min(x+ε, 1)]. The result is an ordinary graph of Conv, Gemm,
// Abs, Max, … so it differentiates (for IBP training) and runs (for verification) like any other.
// Hand-written: no JS library emits interval graphs for ONNX models.
import type { NodeProto } from '../../onnx/proto.js';
import { Attrs, parseNode } from '../../graph/ir.js';
import { GraphBuilder } from './builder.js';
import { UserError } from '../../util/errors.js';
import { COMPILED_OPSET } from './normalize.js';

export const BOUNDS_EPS = 'bounds/eps';
export const BOUNDS_OUT = 'bounds/logits';

/** The model has an operation that interval bounds cannot pass (named in the message). */
export class BoundsUnsupportedError extends UserError {}

interface Iv { l?: string; u?: string; c?: string; r?: string }

/** ops that map [l, u] to [f(l), f(u)]: monotone non-decreasing in their data input, or pure data movement */
const MONOTONE = new Set([
  'Identity', 'Reshape', 'Flatten', 'Transpose', 'Squeeze', 'Unsqueeze', 'Slice', 'Expand', 'Tile', 'Pad', 'Concat', 'Split',
  'Gather', 'MaxPool', 'GlobalMaxPool', 'AveragePool', 'GlobalAveragePool', 'ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin',
  'Relu', 'Sigmoid', 'Tanh', 'Elu', 'Softplus', 'Erf', 'Exp', 'Clip', 'Sqrt', 'Log', 'Dropout', 'Max', 'Min', 'Celu', 'Selu',
]);
/** for these only input 0 carries data; the others must be constants */
const DATA_INPUT_0 = new Set(['Reshape', 'Squeeze', 'Unsqueeze', 'Slice', 'Expand', 'Tile', 'Pad', 'Gather', 'ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'Clip', 'Split']);

/**
 * From the nodes of a forward builder (inputs `xName` and parameters, output `logits`), a builder whose
 * output `bounds/logits` is Concat(lower, upper) along the batch axis, with the extra scalar input
 * `bounds/eps`.
 */
export function emitBounds(src: GraphBuilder, xName: string, logits: string, shapeOf: (name: string) => number[]): GraphBuilder {
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
  const [l, u] = lu(logits);
  b.add('Concat', [l, u], { axis: 0 }, [BOUNDS_OUT]);
  b.setOutputs([BOUNDS_OUT]);
  return b;
}
