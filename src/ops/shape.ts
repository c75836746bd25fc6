// Shape and data-movement operators. When inputs are host tensors (constants, shape chains) they are
// computed in JS, exactly; otherwise with tfjs ops (which carry gradients). Each has one spec: forward,
// gradient, bounds (data movement is monotone and linear), parameter pass-through.
import { tf } from '../tfjs/tf.js';
import { dtypeFromCode, hostTensor, numberAt, numel, type DType, type HostTensor } from '../onnx/tensor.js';
import {
  broadcastIndex, broadcastShapes, hostCast, hostConcat, hostGather, hostReshape, hostTake, hostTranspose, scalarHost,
} from './host.js';
import { isHost, tfToHost, type OpCtx, type Val } from './values.js';
import { defineOp, type BoundRules, type GradRule, type NoGradient } from './spec.js';
import { allocate } from '../onnx/tensor.js';
import { Attrs } from './ir.js';
import { dy0, range, reduceTo } from './grad.js';

function reshapeVal(v: Val, shape: number[]): Val {
  return isHost(v) ? hostReshape(v, shape) : tf.reshape(v, shape);
}

/** pure data movement: each bound moves like the data; linear for CROWN */
const MOVES: BoundRules = { ibp: 'monotone', crown: {} };
/** data movement of input 0 steered by constant inputs (shape, axes, indices, pads) */
const MOVES_0: BoundRules = { ibp: 'monotone', dataInput0: true, crown: {} };
const NO_DATA: NoGradient = { none: 'no data input (constant output)' };
const SHAPE_ONLY: NoGradient = { none: 'reads only the shape of its input' };
const passGrad: GradRule = (g) => [dy0(g)];
const reshapeGrad: GradRule = (g) => [g.b.reshape(dy0(g), g.inShape(0))];

defineOp({ type: 'Identity', forward: { run: (c) => [c.val(0)] }, grad: passGrad, bounds: MOVES, paramPassThrough: true });

defineOp({
  type: 'Constant',
  forward: {
    unsupported(n) {
      return n.attrs.has('sparse_value') ? 'sparse_value' : undefined;
    },
    run(c) {
      const a = c.a;
      const t = a.tensor('value');
      if (t) return [t];
      if (a.has('value_float')) return [hostTensor('float32', [], [a.float('value_float', 0)])];
      if (a.has('value_floats')) { const v = a.floats('value_floats')!; return [hostTensor('float32', [v.length], v)]; }
      if (a.has('value_int')) return [hostTensor('int64', [], [BigInt(a.int('value_int', 0))])];
      if (a.has('value_ints')) { const v = a.ints('value_ints', []); return [hostTensor('int64', [v.length], v.map(BigInt))]; }
      if (a.has('value_string')) return [{ dtype: 'string', shape: [], data: [a.string('value_string', '')] }];
      if (a.has('value_strings')) { const v = a.strings('value_strings')!; return [{ dtype: 'string', shape: [v.length], data: v }]; }
      return c.fail('has no value attribute');
    },
  },
  grad: NO_DATA,
});

defineOp({
  type: 'Shape',
  forward: {
    run(c) {
      let dims = c.shape(0);
      if (c.opset >= 15) {
        const r = dims.length;
        const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
        dims = dims.slice(clamp(c.a.int('start', 0)), c.a.has('end') ? clamp(c.a.int('end', r)) : r);
      }
      return [hostTensor('int64', [dims.length], dims.map(BigInt))];
    },
  },
  grad: SHAPE_ONLY,
});

defineOp({ type: 'Size', forward: { run: (c) => [scalarHost('int64', numel(c.shape(0)))] }, grad: SHAPE_ONLY });

defineOp({
  type: 'Gather',
  forward: {
    run(c) {
      const rank = c.rank(0);
      const axis = c.axis(c.a.int('axis', 0), rank);
      const dim = c.shape(0)[axis]!;
      if (c.isHost(0) && c.isHost(1)) return [hostGather(c.h(0), c.h(1), axis, `${c.node.label}: `)];
      let idx: tf.Tensor;
      if (c.isHost(1)) {
        const h = c.h(1);
        const v = new Int32Array(h.data.length);
        for (let i = 0; i < v.length; i++) {
          const k = numberAt(h, i);
          v[i] = k < 0 ? k + dim : k;
          if (v[i]! < 0 || v[i]! >= dim) c.fail(`index ${k} is out of range for a dimension of ${dim}`);
        }
        idx = tf.tensor(v, h.shape, 'int32');
      } else {
        const t = tf.cast(c.t(1), 'int32');
        idx = tf.where(tf.less(t, 0), tf.add(t, tf.scalar(dim, 'int32')), t);
      }
      return [tf.gather(c.t(0), idx, axis)];
    },
  },
  grad: (g) => {
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
  },
  bounds: { ibp: 'monotone', dataInput0: true },
});

defineOp({
  type: 'GatherElements',
  forward: {
    run(c) {
      const x = c.t(0);
      const axis = c.axis(c.a.int('axis', 0), x.rank);
      const h = c.h(1);
      const dim = x.shape[axis]!;
      // flat indices into x for each output element
      const shape = h.shape;
      const xs = x.shape;
      const flat = new Int32Array(h.data.length);
      const counter = new Array<number>(shape.length).fill(0);
      const xstr: number[] = [];
      let acc = 1;
      for (let d = xs.length - 1; d >= 0; d--) { xstr[d] = acc; acc *= xs[d]!; }
      for (let k = 0; k < flat.length; k++) {
        let j = 0;
        for (let d = 0; d < shape.length; d++) {
          let v = d === axis ? numberAt(h, k) : counter[d]!;
          if (d === axis && v < 0) v += dim;
          j += v * xstr[d]!;
        }
        flat[k] = j;
        for (let d = shape.length - 1; d >= 0; d--) { if (++counter[d]! < shape[d]!) break; counter[d] = 0; }
      }
      return [tf.reshape(tf.gather(tf.reshape(x, [-1]), tf.tensor(flat, [flat.length], 'int32')), shape)];
    },
  },
  grad: (g) => {
    const xs = g.inShape(0);
    const axis = (g.a.int('axis', 0) + xs.length) % xs.length;
    const zeros = g.b.op('ConstantOfShape', [g.b.constI64(xs)]);
    return [g.b.op('ScatterElements', [zeros, g.x(1), dy0(g)], { axis, reduction: 'add' }), undefined];
  },
});

// ScatterND (Swin's attention-mask construction, and index updates in general): data with the slices that
// `indices` ([..., k]) address replaced by (or, reduction 'add', increased by) `updates`
defineOp({
  type: 'ScatterND',
  forward: {
    unsupported(n) {
      const r = new Attrs(n).string('reduction', 'none');
      return r === 'none' || r === 'add' ? undefined : `reduction '${r}'`;
    },
    run(c) {
      const xs = c.shape(0);
      const idx = c.h(1);
      const k = idx.shape[idx.shape.length - 1] ?? 0;
      if (k < 1 || k > xs.length) c.fail(`indices of shape [${idx.shape}] do not address data of rank ${xs.length}`);
      const count = idx.shape.slice(0, -1).reduce((p, d) => p * d, 1);
      const slice = xs.slice(k).reduce((p, d) => p * d, 1);
      const want = [...idx.shape.slice(0, -1), ...xs.slice(k)];
      if (c.shape(2).join() !== want.join()) c.fail(`updates have shape [${c.shape(2)}], indices and data need [${want}]`);
      const strides: number[] = [];
      let acc = slice;
      for (let d = k - 1; d >= 0; d--) { strides[d] = acc; acc *= xs[d]!; }
      const pos = new Int32Array(count * slice);
      for (let i = 0; i < count; i++) {
        let base = 0;
        for (let d = 0; d < k; d++) {
          let v = numberAt(idx, i * k + d);
          if (v < 0) v += xs[d]!;
          if (v < 0 || v >= xs[d]!) c.fail(`index ${numberAt(idx, i * k + d)} is out of range for axis ${d} of size ${xs[d]}`);
          base += v * strides[d]!;
        }
        for (let s2 = 0; s2 < slice; s2++) pos[i * slice + s2] = base + s2;
      }
      const add = c.a.string('reduction', 'none') === 'add';
      if (c.isHost(0) && c.isHost(2)) {
        const x = c.h(0);
        const u = c.h(2);
        const data = x.data.slice() as typeof x.data;
        for (let j = 0; j < pos.length; j++) {
          const v = u.data[j] as number & bigint;
          (data as unknown as (number | bigint)[])[pos[j]!] = add ? (data[pos[j]!] as number & bigint) + v : v;
        }
        return [{ dtype: x.dtype, shape: x.shape.slice(), data }];
      }
      const n = xs.reduce((p, d) => p * d, 1);
      const x = tf.reshape(c.t(0), [n]);
      const u = tf.reshape(c.t(2), [pos.length]);
      const at = tf.tensor(pos, [pos.length, 1], 'int32');
      const scattered = tf.scatterND(at, u, [n]);
      if (add) return [tf.reshape(tf.add(x, scattered), xs)];
      const hit = tf.minimum(tf.scatterND(at, tf.onesLike(u), [n]), 1);
      return [tf.reshape(tf.add(tf.mul(x, tf.sub(1, hit)), scattered), xs)];
    },
  },
  grad: (g) => {
    // data: dy where nothing was written (reduction none), all of dy (add); updates: dy at the written slices
    const add = g.a.string('reduction', 'none') === 'add';
    const dy = dy0(g);
    const dData = !g.need(0) ? undefined : add ? dy : g.b.op('ScatterND', [dy, g.x(1), g.b.op('ConstantOfShape', [g.b.constI64(g.inShape(2))])]);
    return [dData, undefined, g.need(2) ? g.b.op('GatherND', [dy, g.x(1)]) : undefined];
  },
});

function unsqueezeShape(c: OpCtx, shape: number[], axes: number[]): number[] {
  const r = shape.length + axes.length;
  const norm = axes.map((a) => c.axis(a, r)).sort((a, b) => a - b);
  if (new Set(norm).size !== norm.length) c.fail(`repeated axes [${axes}]`);
  const out: number[] = [];
  let k = 0;
  for (let i = 0; i < r; i++) out.push(norm.includes(i) ? 1 : shape[k++]!);
  return out;
}

defineOp({
  type: 'Unsqueeze',
  forward: {
    run(c) {
      const axes = c.opset >= 13 ? c.ints(1) : c.a.ints('axes', []);
      return [reshapeVal(c.val(0), unsqueezeShape(c, c.shape(0), axes))];
    },
  },
  grad: reshapeGrad,
  bounds: MOVES_0,
  paramPassThrough: true,
});

defineOp({
  type: 'Squeeze',
  forward: {
    run(c) {
      const shape = c.shape(0);
      const axesIn = c.opset >= 13 ? (c.has(1) ? c.ints(1) : undefined) : c.a.ints('axes');
      let keep: number[];
      if (axesIn === undefined || axesIn.length === 0) keep = shape.filter((d) => d !== 1);
      else {
        const axes = axesIn.map((a) => c.axis(a, shape.length));
        for (const a of axes) if (shape[a] !== 1) c.fail(`cannot squeeze axis ${a} of size ${shape[a]}`);
        keep = shape.filter((_, i) => !axes.includes(i));
      }
      return [reshapeVal(c.val(0), keep)];
    },
  },
  grad: reshapeGrad,
  bounds: MOVES_0,
  paramPassThrough: true,
});

defineOp({
  type: 'Concat',
  forward: {
    run(c) {
      const rank = c.rank(0);
      const axis = c.axis(c.a.int('axis', rank === 1 ? 0 : 1), rank);
      const present = Array.from({ length: c.n }, (_, i) => i).filter((i) => c.has(i));
      for (const i of present) {
        const s = c.shape(i);
        if (s.length !== rank || s.some((d, k) => k !== axis && d !== c.shape(present[0]!)[k])) {
          c.fail(`input ${i} has shape [${s}], not concatenable with [${c.shape(present[0]!)}] on axis ${axis}`);
        }
      }
      if (present.every((i) => c.isHost(i))) return [hostConcat(present.map((i) => c.h(i)), axis)];
      let ts = present.map((i) => c.t(i));
      if (ts.some((t) => t.dtype !== ts[0]!.dtype)) ts = ts.map((t) => tf.cast(t, 'float32'));
      return [tf.concat(ts, axis)];
    },
  },
  grad: (g) => {
    const rank = g.outShape(0).length;
    let axis = g.a.int('axis', 0);
    if (axis < 0) axis += rank;
    const sizes = g.node.inputs.map((_, i) => g.inShape(i)[axis]!);
    const parts = g.b.split(dy0(g), sizes, axis);
    return parts.map((p, i) => (g.need(i) ? p : undefined));
  },
  // constant parts of the concatenation are the offset f(0)
  bounds: { ibp: 'monotone', crown: { offset: (_n, dep) => dep.some((d) => !d) } },
});

/** Target shape of Reshape: 0 copies the input dim (unless allowzero), -1 is inferred. */
export function reshapeTarget(c: OpCtx, inShape: number[], spec: number[], allowZero: boolean): number[] {
  const out = spec.map((d, i) => (d === 0 && !allowZero ? (inShape[i] ?? c.fail(`shape [${spec}]: no input dim to copy at ${i}`)) : d));
  const total = numel(inShape);
  const neg = out.filter((d) => d === -1).length;
  if (neg > 1) c.fail(`shape [${spec}] has more than one -1`);
  if (neg === 1) {
    const known = out.filter((d) => d !== -1).reduce((p, d) => p * d, 1);
    if (known === 0 || total % known) c.fail(`cannot reshape [${inShape}] to [${spec}]`);
    out[out.indexOf(-1)] = total / known;
  }
  if (numel(out) !== total) c.fail(`cannot reshape [${inShape}] (${total} elements) to [${spec}]`);
  return out;
}

defineOp({
  type: 'Reshape',
  forward: {
    run(c) {
      const spec = c.opset >= 5 ? c.ints(1) : c.a.ints('shape', []);
      const allowZero = c.opset >= 14 && c.a.int('allowzero', 0) === 1;
      return [reshapeVal(c.val(0), reshapeTarget(c, c.shape(0), spec, allowZero))];
    },
  },
  grad: reshapeGrad,
  bounds: MOVES_0,
  paramPassThrough: true,
});

defineOp({
  type: 'Flatten',
  forward: {
    run(c) {
      const s = c.shape(0);
      const a = c.a.int('axis', 1);
      const axis = a < 0 ? a + s.length : a;
      if (axis < 0 || axis > s.length) c.fail(`axis ${a} is out of range for rank ${s.length}`);
      return [reshapeVal(c.val(0), [numel(s.slice(0, axis)), numel(s.slice(axis))])];
    },
  },
  grad: reshapeGrad,
  bounds: MOVES,
  paramPassThrough: true,
});

defineOp({
  type: 'Transpose',
  forward: {
    run(c) {
      const r = c.rank(0);
      const perm = c.a.ints('perm', Array.from({ length: r }, (_, i) => r - 1 - i));
      if (perm.length !== r || new Set(perm).size !== r || perm.some((p) => p < 0 || p >= r)) c.fail(`perm [${perm}] is not a permutation of ${r} axes`);
      if (c.isHost(0)) return [hostTranspose(c.h(0), perm)];
      return [tf.transpose(c.t(0), perm)];
    },
  },
  grad: (g) => {
    const r = g.inShape(0).length;
    const perm = g.a.ints('perm', range(0, r).reverse());
    const inv = new Array<number>(r);
    perm.forEach((p, i) => (inv[p] = i));
    return [g.b.op('Transpose', [dy0(g)], { perm: inv })];
  },
  bounds: MOVES,
  paramPassThrough: true,
});

function castTo(c: OpCtx, v: Val, to: DType): Val {
  if (isHost(v)) return hostCast(v, to);
  if (to === 'string') c.fail('casting to string is not supported');
  const td = to === 'bool' ? 'bool' : to.startsWith('float') || to === 'bfloat16' ? 'float32' : 'int32';
  if (v.dtype === td) return v;
  return tf.cast(v, td);
}

defineOp({
  type: 'Cast',
  forward: {
    unsupported(n) {
      const to = new Attrs(n).int('to');
      return to === 8 ? 'casting to string' : undefined;
    },
    run: (c) => [castTo(c, c.val(0), dtypeFromCode(c.a.int('to', 1), c.node.label))],
  },
  grad: passGrad,
  paramPassThrough: true,
});

defineOp({
  type: 'CastLike',
  forward: {
    run(c) {
      const like = c.val(1);
      const to: DType = isHost(like) ? like.dtype : like.dtype === 'float32' ? 'float32' : like.dtype === 'bool' ? 'bool' : 'int32';
      return [castTo(c, c.val(0), to)];
    },
  },
  grad: passGrad,
});

/** Element positions a Slice selects on one axis (ONNX clamping rules for any step sign). */
function slicePositions(dim: number, start: number, end: number, step: number): number[] {
  const norm = (v: number): number => (v < 0 ? v + dim : v);
  let s = norm(start);
  let e = norm(end);
  if (step > 0) {
    s = Math.min(Math.max(s, 0), dim);
    e = Math.min(Math.max(e, 0), dim);
  } else {
    s = Math.min(Math.max(s, 0), dim - 1);
    e = Math.min(Math.max(e, -1), dim - 1);
  }
  const out: number[] = [];
  for (let i = s; step > 0 ? i < e : i > e; i += step) out.push(i);
  return out;
}

defineOp({
  type: 'Slice',
  forward: {
    run(c) {
      const shape = c.shape(0);
      const r = shape.length;
      let starts: number[]; let ends: number[]; let axes: number[]; let steps: number[];
      if (c.opset < 10) {
        starts = c.a.ints('starts', []);
        ends = c.a.ints('ends', []);
        axes = c.a.ints('axes', starts.map((_, i) => i));
        steps = starts.map(() => 1);
      } else {
        starts = c.ints(1);
        ends = c.ints(2);
        axes = c.has(3) ? c.ints(3) : starts.map((_, i) => i);
        steps = c.has(4) ? c.ints(4) : starts.map(() => 1);
      }
      if (starts.length !== ends.length || axes.length !== starts.length || steps.length !== starts.length) c.fail('starts/ends/axes/steps differ in length');
      let v = c.val(0);
      const begin = new Array<number>(r).fill(0);
      const size = shape.slice();
      const gathers: [number, number[]][] = [];
      axes.forEach((a0, k) => {
        const a = c.axis(a0, r);
        if (steps[k] === 0) c.fail('step 0');
        const pos = slicePositions(shape[a]!, starts[k]!, ends[k]!, steps[k]!);
        if (steps[k] === 1) {
          begin[a] = pos.length ? pos[0]! : 0;
          size[a] = pos.length;
        } else gathers.push([a, pos]);
      });
      if (isHost(v)) {
        for (let a = 0; a < r; a++) if (begin[a] !== 0 || size[a] !== shape[a]) v = hostTake(v, a, Array.from({ length: size[a]! }, (_, i) => begin[a]! + i));
        for (const [a, pos] of gathers) v = hostTake(v as HostTensor, a, pos);
        return [v];
      }
      let t = tf.slice(v, begin, size);
      for (const [a, pos] of gathers) t = tf.gather(t, tf.tensor(pos, [pos.length], 'int32'), a);
      return [t];
    },
  },
  grad: (g) => {
    const xs = g.inShape(0);
    const r = xs.length;
    const starts = g.ints(1);
    const ends = g.ints(2);
    const axes = g.has(3) ? g.ints(3) : starts.map((_, i) => i);
    const steps = g.has(4) ? g.ints(4) : starts.map(() => 1);
    if (steps.every((s) => s === -1)) {
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
  },
  bounds: MOVES_0,
});

defineOp({
  type: 'Split',
  forward: {
    run(c) {
      const shape = c.shape(0);
      const axis = c.axis(c.a.int('axis', 0), shape.length);
      const dim = shape[axis]!;
      let sizes: number[] | undefined = c.opset >= 13 ? (c.has(1) ? c.ints(1) : undefined) : c.a.ints('split');
      const nOut = c.node.outputs.length;
      if (!sizes || sizes.length === 0) {
        const parts = c.opset >= 18 ? c.a.int('num_outputs', nOut) : nOut;
        const chunk = Math.ceil(dim / parts);
        sizes = Array.from({ length: parts }, (_, i) => Math.max(0, Math.min(chunk, dim - i * chunk)));
      }
      if (sizes.reduce((p, v) => p + v, 0) !== dim) c.fail(`split sizes [${sizes}] do not add up to ${dim}`);
      if (c.isHost(0)) {
        let off = 0;
        return sizes.map((s) => { const pos = Array.from({ length: s }, (_, i) => off + i); off += s; return hostTake(c.h(0), axis, pos); });
      }
      return tf.split(c.t(0), sizes, axis);
    },
  },
  grad: (g) => {
    const xs = g.inShape(0);
    let axis = g.a.int('axis', 0);
    if (axis < 0) axis += xs.length;
    const parts = g.node.outputs.map((_, k) => g.dy(k) ?? g.b.op('ConstantOfShape', [g.b.constI64(g.outShape(k))]));
    return [g.b.op('Concat', parts, { axis })];
  },
  bounds: MOVES_0,
});

function expandHost(x: HostTensor, shape: number[]): HostTensor {
  const idx = broadcastIndex(x.shape, shape);
  const out = allocate(x.dtype, idx.length) as unknown as unknown[];
  const src = x.data as unknown as unknown[];
  for (let k = 0; k < idx.length; k++) out[k] = src[idx[k]!];
  return { dtype: x.dtype, shape, data: out as never };
}

defineOp({
  type: 'Expand',
  forward: {
    run(c) {
      const shape = broadcastShapes(c.shape(0), c.ints(1), `${c.node.label}: `);
      c.checkOutput(shape);
      if (c.isHost(0)) return [expandHost(c.h(0), shape)];
      const x = c.t(0);
      const lifted = x.rank < shape.length ? tf.reshape(x, [...new Array(shape.length - x.rank).fill(1), ...x.shape]) : x;
      return [tf.broadcastTo(lifted, shape)];
    },
  },
  grad: (g) => [reduceTo(g.b, dy0(g), g.outShape(0), g.inShape(0)), undefined],
  bounds: MOVES_0,
});

defineOp({
  type: 'Tile',
  forward: {
    run(c) {
      const reps = c.ints(1);
      if (reps.length !== c.rank(0)) c.fail(`repeats [${reps}] do not match rank ${c.rank(0)}`);
      if (reps.some((r) => r < 0)) c.fail(`negative repeats [${reps}]`);
      c.checkOutput(c.shape(0).map((d, i) => d * reps[i]!));
      return [tf.tile(c.t(0), reps)];
    },
  },
  grad: (g) => {
    // dy viewed as [r0, d0, r1, d1, …]: sum over the repeats
    const xs = g.inShape(0);
    const reps = g.ints(1);
    const dy = g.b.reshape(dy0(g), xs.flatMap((d, i) => [reps[i]!, d]));
    return [g.b.reshape(g.b.reduce('ReduceSum', dy, xs.map((_, i) => 2 * i), false), xs), undefined];
  },
  bounds: { ibp: 'monotone', dataInput0: true },
});

defineOp({
  type: 'ConstantOfShape',
  forward: {
    run(c) {
      const shape = c.ints(0);
      c.checkOutput(shape);
      const v = c.a.tensor('value') ?? hostTensor('float32', [1], [0]);
      const out = allocate(v.dtype, numel(shape)) as unknown as unknown[];
      for (let i = 0; i < out.length; i++) out[i] = v.data[0];
      return [{ dtype: v.dtype, shape, data: out as never }];
    },
  },
  grad: NO_DATA,
});

// EyeLike: ones on the k-th diagonal of a matrix shaped like the input (CROWN's identity specifications)
defineOp({
  type: 'EyeLike',
  forward: {
    run(c) {
      const shape = c.shape(0);
      if (shape.length !== 2) c.fail(`input of rank ${shape.length}, EyeLike needs a matrix`);
      c.checkOutput(shape);
      const [rows, cols] = shape as [number, number];
      const k = c.a.int('k', 0);
      // the output type: the dtype attribute, else the input's
      const dtype: DType = c.a.has('dtype') ? dtypeFromCode(c.a.int('dtype', 1), c.node.label) : c.isHost(0) ? c.h(0).dtype : c.t(0).dtype === 'float32' ? 'float32' : 'int32';
      const ones = new Array<number>(rows * cols).fill(0);
      for (let r = 0; r < rows; r++) if (r + k >= 0 && r + k < cols) ones[r * cols + r + k] = 1;
      return [hostTensor(dtype, shape, dtype === 'int64' || dtype === 'uint64' ? ones.map(BigInt) : ones)];
    },
  },
  grad: { none: 'reads only the shape of its input' },
});

defineOp({
  type: 'Range',
  forward: {
    run(c) {
      const start = c.scalar(0);
      const limit = c.scalar(1);
      const delta = c.scalar(2);
      if (delta === 0) c.fail('delta is 0');
      const n = Math.max(Math.ceil((limit - start) / delta), 0);
      c.checkOutput([n]);
      const dtype = c.isHost(0) ? c.h(0).dtype : 'float32';
      const vals = Array.from({ length: n }, (_, i) => start + i * delta);
      return [hostTensor(dtype, [n], dtype === 'int64' ? vals.map((v) => BigInt(v)) : vals)];
    },
  },
  grad: NO_DATA,
});

defineOp({
  type: 'Pad',
  forward: {
    unsupported(n, opset) {
      const mode = new Attrs(n).string('mode', 'constant');
      if (mode !== 'constant' && mode !== 'reflect' && mode !== 'edge') return `mode '${mode}'`;
      if (opset < 2) return 'opset 1 Pad';
      return undefined;
    },
    run(c) {
      const r = c.rank(0);
      const mode = c.a.string('mode', 'constant');
      let pads: number[];
      let value = 0;
      if (c.opset < 11) {
        pads = c.a.ints('pads', []);
        value = c.a.float('value', 0);
      } else {
        pads = c.ints(1);
        if (c.has(2)) value = c.scalar(2);
        if (c.has(3)) {
          const axes = c.ints(3).map((a) => c.axis(a, r));
          const full = new Array<number>(2 * r).fill(0);
          axes.forEach((a, i) => { full[a] = pads[i]!; full[a + r] = pads[i + axes.length]!; });
          pads = full;
        }
      }
      if (pads.length !== 2 * r) c.fail(`pads [${pads}] should have ${2 * r} values for rank ${r}`);
      const padded = c.shape(0).map((d, i) => d + pads[i]! + pads[i + r]!);
      if (padded.some((d) => d < 0)) c.fail(`pads [${pads}] crop more than the input [${c.shape(0)}] has`);
      c.checkOutput(padded);
      let x = c.t(0);
      // negative pads crop
      if (pads.some((p) => p < 0)) {
        const begin = pads.slice(0, r).map((p) => Math.max(0, -p));
        const size = x.shape.map((d, i) => d - begin[i]! - Math.max(0, -pads[i + r]!));
        x = tf.slice(x, begin, size);
      }
      const pp = Array.from({ length: r }, (_, i) => [Math.max(0, pads[i]!), Math.max(0, pads[i + r]!)] as [number, number]);
      if (mode === 'constant') return [tf.pad(x, pp, value)];
      if (mode === 'reflect') return [tf.mirrorPad(x, pp, 'reflect')];
      // edge: repeat the border slices
      for (let a = 0; a < r; a++) {
        const [b, e] = pp[a]!;
        if (!b && !e) continue;
        const dim = x.shape[a]!;
        const parts: tf.Tensor[] = [];
        const edge = (i: number, k: number): tf.Tensor => {
          const begin = new Array<number>(x.rank).fill(0); begin[a] = i;
          const size = x.shape.slice(); size[a] = 1;
          const reps = new Array<number>(x.rank).fill(1); reps[a] = k;
          return tf.tile(tf.slice(x, begin, size), reps);
        };
        if (b) parts.push(edge(0, b));
        parts.push(x);
        if (e) parts.push(edge(dim - 1, e));
        x = tf.concat(parts, a);
      }
      return [x];
    },
  },
  grad: (g) => {
    const mode = g.a.string('mode', 'constant');
    if (mode !== 'constant') throw new Error(`Pad mode '${mode}' has no gradient rule`);
    // the gradient is the inner part: negated pads (cropping where the forward padded)
    const out: (string | undefined)[] = [g.b.op('Pad', [dy0(g), g.b.constI64(g.ints(1).map((p) => -p))])];
    for (let i = 1; i < g.node.inputs.length; i++) out.push(undefined);
    return out;
  },
  // a constant pad value is the offset f(0)
  bounds: { ibp: 'monotone', dataInput0: true, crown: { offset: (n) => !!n.inputs[2] } },
});

// For the folding pass: tfjs outputs of constant subgraphs are read back to the host.
export function toHostVal(v: Val): HostTensor {
  return isHost(v) ? v : tfToHost(v);
}

defineOp({
  type: 'DepthToSpace',
  forward: {
    unsupported(n) {
      const mode = new Attrs(n).string('mode', 'DCR');
      return mode === 'DCR' || mode === 'CRD' ? undefined : `mode '${mode}'`;
    },
    run(c) {
      if (c.rank(0) !== 4) c.fail('input must be 4-D');
      const s = c.a.int('blocksize', 1);
      const [n, ch, h, w] = c.shape(0) as [number, number, number, number];
      if (ch % (s * s)) c.fail(`channels ${ch} not divisible by blocksize² ${s * s}`);
      const co = ch / (s * s);
      const crd = c.a.string('mode', 'DCR') === 'CRD';
      const x6 = tf.reshape(c.t(0), crd ? [n, co, s, s, h, w] : [n, s, s, co, h, w]);
      const t = tf.transpose(x6, crd ? [0, 1, 4, 2, 5, 3] : [0, 3, 4, 1, 5, 2]);
      return [tf.reshape(t, [n, co, h * s, w * s])];
    },
  },
  grad: (g) => {
    const [n, ch, h, w] = g.inShape(0) as [number, number, number, number];
    const s = g.a.int('blocksize', 1);
    const co = ch / (s * s);
    const d6 = g.b.reshape(dy0(g), [n, co, h, s, w, s]);
    const crd = g.a.string('mode', 'DCR') === 'CRD';
    return [g.b.reshape(g.b.op('Transpose', [d6], { perm: crd ? [0, 1, 3, 5, 2, 4] : [0, 3, 5, 1, 2, 4] }), [n, ch, h, w])];
  },
});

defineOp({
  type: 'SpaceToDepth',
  forward: {
    run(c) {
      if (c.rank(0) !== 4) c.fail('input must be 4-D');
      const s = c.a.int('blocksize', 1);
      const [n, ch, h, w] = c.shape(0) as [number, number, number, number];
      if (h % s || w % s) c.fail(`spatial size ${h}x${w} not divisible by blocksize ${s}`);
      const x6 = tf.reshape(c.t(0), [n, ch, h / s, s, w / s, s]);
      return [tf.reshape(tf.transpose(x6, [0, 3, 5, 1, 2, 4]), [n, ch * s * s, h / s, w / s])];
    },
  },
  grad: (g) => {
    // inverse of the forward [n,c,h/s,s,w/s,s] → [n,s,s,c,h/s,w/s] transpose
    const [n, c, h, w] = g.inShape(0) as [number, number, number, number];
    const s = g.a.int('blocksize', 1);
    const d6 = g.b.reshape(dy0(g), [n, s, s, c, h / s, w / s]);
    return [g.b.reshape(g.b.op('Transpose', [d6], { perm: [0, 3, 4, 1, 5, 2] }), [n, c, h, w])];
  },
});
