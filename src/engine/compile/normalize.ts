// Rewrite the forward nodes of a prepared graph into opset-18 form, so that compiled forward and backward
// graphs can live in one model. Only the operators whose signature changed between opsets 7 and 18 (and
// that the converter supports) need work: axes/pads/split attributes that became inputs or vice versa,
// Softmax's 2-D coercion before opset 13.
import type { NodeProto } from '../../onnx/proto.js';
import type { PreparedGraph } from '../../graph/graph.js';
import { Attrs, type Node } from '../../ops/ir.js';
import { hostTensor, numberAt, type HostTensor } from '../../onnx/tensor.js';
import type { GraphBuilder } from '../../onnx/builder.js';
import { NotCompilableError } from './errors.js';
import { cropDeadTaps, reduceAxesFromInput, softmaxAxis, windows } from '../../onnx/semantics.js';
export { COMPILED_OPSET } from '../../ops/index.js';

/** largest dense matrix (entries) a convolution on a small map becomes (16M: 64 MB) */
const DENSE_MAX = 1 << 24;

/** reductions other than ReduceSum (whose axes moved to an input at opset 13, the others' at 18) */
const REDUCE_OPS = new Set(['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare']);

/** Emit node `n` of a model at `opset` into builder `b` (opset 18) with the same input/output names. */
export function emitNormalized(b: GraphBuilder, n: Node, opset: number, consts: Map<string, HostTensor>, shapeOf: (name: string) => number[]): void {
  const rankOf = (name: string): number => shapeOf(name).length;
  const a = new Attrs(n);
  const proto = n.proto;
  const attrsExcept = (...drop: string[]): NodeProto['attribute'] => (proto.attribute ?? []).filter((x) => !drop.includes(x.name ?? ''));
  const copyWith = (inputs: string[], drop: string[] = [], extra: NodeProto['attribute'] = []): void => {
    b.copy({ ...proto, input: inputs, attribute: [...(attrsExcept(...drop) ?? []), ...(extra ?? [])] });
  };
  const constInts = (name: string): number[] => {
    const c = consts.get(name);
    if (!c) throw new NotCompilableError(`${n.label}: input '${name}' is computed at run time`);
    return Array.from({ length: c.data.length }, (_, i) => numberAt(c, i));
  };
  const ins = n.inputs;
  switch (n.opType) {
    case 'Softmax': case 'LogSoftmax': case 'Hardmax': {
      const r = rankOf(ins[0]!);
      const { axis, coerce2d } = softmaxAxis(opset, a.int('axis'), r);
      if (!coerce2d) return b.copy(proto);
      if (axis === r - 1) return copyWith(ins, ['axis'], [{ name: 'axis', type: 2, i: -1 }]);
      // coerced to 2-D at `axis`: flatten, softmax over the rows, shape back
      const flat = b.op('Flatten', [ins[0]!], { axis });
      const sm = b.op(n.opType, [flat], { axis: 1 });
      b.add('Reshape', [sm, b.op('Shape', [ins[0]!])], {}, [n.outputs[0]!]);
      return;
    }
    case 'Unsqueeze': case 'Squeeze':
      if (opset >= 13) return b.copy(proto);
      if (!a.has('axes')) return copyWith(ins, ['axes']);
      return copyWith([ins[0]!, b.constI64(a.ints('axes', []))], ['axes']);
    case 'Split':
      if (opset >= 18) {
        if (ins[1]) return copyWith(ins, ['num_outputs']);
        // num_outputs: equal chunks, the last one smaller (explicit sizes, as older models give them)
        const shape = shapeOf(ins[0]!);
        let axis = a.int('axis', 0);
        if (axis < 0) axis += shape.length;
        const dim = shape[axis]!;
        const parts = n.outputs.length;
        const chunk = Math.ceil(dim / parts);
        const sizes = Array.from({ length: parts }, (_, i) => Math.max(0, Math.min(chunk, dim - i * chunk)));
        return copyWith([ins[0]!, b.constI64(sizes)], ['num_outputs']);
      }
      if (opset >= 13 || !a.has('split')) return b.copy(proto);
      return copyWith([ins[0]!, b.constI64(a.ints('split', []))], ['split']);
    case 'ReduceSum':
      if (reduceAxesFromInput('ReduceSum', opset) || !a.has('axes')) return b.copy(proto);
      return copyWith([ins[0]!, b.constI64(a.ints('axes', []))], ['axes']);
    case 'Clip': {
      if (opset >= 11) return b.copy(proto);
      const lo = a.float('min');
      const hi = a.float('max');
      return copyWith([ins[0]!, lo !== undefined ? b.scalarF(lo) : '', hi !== undefined ? b.scalarF(hi) : ''], ['min', 'max']);
    }
    case 'Pad': {
      if (opset >= 18 && ins[3]) {
        const r = rankOf(ins[0]!);
        const axes = constInts(ins[3]).map((x) => (x < 0 ? x + r : x));
        const pads = constInts(ins[1]!);
        const full = new Array<number>(2 * r).fill(0);
        axes.forEach((ax, i) => { full[ax] = pads[i]!; full[ax + r] = pads[i + axes.length]!; });
        return copyWith([ins[0]!, b.constI64(full), ins[2] ?? ''], []);
      }
      if (opset >= 11) return b.copy(proto);
      return copyWith([ins[0]!, b.constI64(a.ints('pads', [])), b.scalarF(a.float('value', 0))], ['pads', 'value']);
    }
    case 'Conv': {
      // kernel taps that read only padding (3x3 convolutions on 1x1 maps, late in CIFAR-size ResNets) are
      // cropped away: the same function with fewer multiply-adds forward and backward, and a zero gradient for
      // the cropped taps as before
      const xs = shapeOf(ins[0]!);
      const ws = shapeOf(ins[1]!);
      if (xs.length < 3 || ws.length !== xs.length) return b.copy(proto);
      const geo = windows({ strides: a.ints('strides'), dilations: a.ints('dilations'), pads: a.ints('pads'), autoPad: a.string('auto_pad', 'NOTSET') }, xs.slice(2), ws.slice(2), false, (why) => {
        throw new NotCompilableError(`${n.label}: ${why}`);
      });
      const crop = cropDeadTaps(geo, xs.slice(2));
      // operand shapes declared for the pass that moves convolutions to blocked layouts (engine/compile/nchwc.ts)
      b.setShape(ins[0]!, xs);
      b.setShape(ins[1]!, ws);
      const kernel = ws.slice(2);
      // A 0/1 matrix [cells of grid, cells of box] that picks the box (row-major, from `first` on) out of the
      // grid, a constant of the graph as the model's own are (the backward graph embeds it instead of fetching
      // it). Products with it take a kernel's live taps and a map's window; their gradients are one GEMM too
      // (a Slice's is a Pad: ~5 ns per element on kernels of 1-2 taps per axis, 1.5 ms for [128,256,1,1] into
      // 2x2 maps)
      const constTensor = (data: Float32Array, shape: number[]): string => {
        const name = b.constF(data, shape);
        consts.set(name, hostTensor('float32', shape, data));
        return name;
      };
      const boxSelection = (grid: number[], box: number[], first: number[]): string => {
        const cells = grid.reduce((p, d) => p * d, 1);
        const boxCells = box.reduce((p, d) => p * d, 1);
        const select = new Float32Array(cells * boxCells);
        for (let j = 0; j < boxCells; j++) {
          // box cell j is cell `src` of the grid
          let src = 0;
          for (let i = 0, rest = j; i < grid.length; i++) {
            const inner = box.slice(i + 1).reduce((p, k) => p * k, 1);
            src = src * grid[i]! + Math.floor(rest / inner) + first[i]!;
            rest %= inner;
          }
          select[src * boxCells + j] = 1;
        }
        return constTensor(select, [cells, boxCells]);
      };
      const kept = crop ? crop.last.map((k, i) => k - crop.first[i]! + 1) : kernel;
      const size = (dims: number[]): number => dims.reduce((p, d) => p * d, 1);
      const [taps, window, inPixels, outPixels] = [size(kernel), size(kept), size(xs.slice(2)), size(geo.out)];
      // the kernel cropped to its live taps: W [Cout·Cin, taps] × S [taps, kept taps]
      const croppedWeight = (c: NonNullable<typeof crop>): string => {
        const w = b.reshape(b.op('MatMul', [b.reshape(ins[1]!, [ws[0]! * ws[1]!, taps]), boxSelection(kernel, kept, c.first)]), [ws[0]!, ws[1]!, ...kept]);
        b.setShape(w, [ws[0]!, ws[1]!, ...kept]);
        return w;
      };
      const group = a.int('group', 1);
      const onePixel = geo.out.every((o) => o === 1) && geo.dilations.every((d) => d === 1) && (crop ? crop.pads : geo.pads).every((p) => p === 0) && kept.every((k, i) => k <= xs[i + 2]!);
      // x's leading window of `kept` pixels per axis, as [N·C, window pixels]
      const windowRows = (): string => {
        if (kept.every((k, i) => k === xs[i + 2])) return b.reshape(ins[0]!, [xs[0]! * xs[1]!, window]);
        // (a selection matrix of at most 64k entries; past that a Slice, whose gradient is a Pad)
        if (inPixels * window <= 65536) return b.op('MatMul', [b.reshape(ins[0]!, [xs[0]! * xs[1]!, inPixels]), boxSelection(xs.slice(2), kept, kept.map(() => 0))]);
        return b.reshape(b.slice(ins[0]!, kept.map(() => 0), kept, kept.map((_, i) => i + 2)), [xs[0]! * xs[1]!, window]);
      };
      if (onePixel && group > 1 && group === xs[1] && ws[0] === group && ws[1] === 1) {
        // depthwise with one output pixel (MobileNetV2's last blocks at 32x32 input: 3x3 kernels cropped to
        // their centre on 1x1 maps, the stride-2 one on a 2x2 map): a per-channel weighted sum of the window,
        // elementwise work that onnxruntime's grouped Conv runs as one tiny GEMM per channel and image
        // (6.2 ms for [128,960,1,1], measured; its gradient as a ConvTranspose 11.7 ms for [128,576,2,2])
        const w2 = b.reshape(crop ? croppedWeight(crop) : ins[1]!, [1, ws[0]!, window]);
        const weighted = b.op('Mul', [b.reshape(windowRows(), [xs[0]!, xs[1]!, window]), w2]);
        const summed = window === 1 ? weighted : b.reduce('ReduceSum', weighted, [2], true);
        const shaped = [xs[0]!, ws[0]!, ...geo.out];
        const biased = ins[2] ? b.op('Add', [b.reshape(summed, [xs[0]!, ws[0]!]), b.reshape(ins[2], [1, ws[0]!])]) : summed;
        b.add('Reshape', [biased, b.constI64(shaped)], {}, [n.outputs[0]!]);
        return;
      }
      if (group === 1 && onePixel) {
        // one output pixel whose window lies inside the map (ResNet-18's layer4 at 32x32 input: 3x3 kernels on
        // 1x1 maps, the stride-2 ones on 2x2): a Gemm over the batch, x's window [N, C·window] times the kernel
        // [Cout, C·window]; onnxruntime's Conv runs one GEMM per image there, a matrix-vector product
        // (1.7-2.3 ms vs 0.4-0.5 for 128x512x512; 4.9 vs 2.6 ms for a fed 512x256x2x2, measured)
        const w2 = b.reshape(crop ? croppedWeight(crop) : ins[1]!, [ws[0]!, ws[1]! * window]);
        const y = b.op('Gemm', [b.reshape(windowRows(), [xs[0]!, xs[1]! * window]), w2, ...(ins[2] ? [ins[2]] : [])], { transB: 1 });
        b.add('Reshape', [y, b.constI64([xs[0]!, ws[0]!, ...geo.out])], {}, [n.outputs[0]!]);
        return;
      }
      if (group === 1 && inPixels <= taps && ws[0]! * ws[1]! * outPixels * inPixels <= DENSE_MAX) {
        // a map no larger than the kernel (ResNet-18's layer3 at 32x32 input: 3x3 kernels on 2x2 maps): the
        // convolution as the dense matrix it is, [Cout·out pixels, C·in pixels], one Gemm over the batch with
        // no more multiply-adds than the convolution's (onnxruntime's Conv computes every padded tap there: 4.4
        // vs 1.4 ms for 256x256x3x3 on [128,256,2,2], measured). The matrix is the kernel spread by a constant
        // 0/1 tensor S [out pixels, taps, in pixels] (1 where that tap of that output pixel reads that input
        // pixel), one product broadcast over Cout and out pixels, W [Cout, 1, C, taps] × S → [Cout, out, C, in]:
        // the matrix's own layout, so neither it nor its gradient back to the kernel needs a transpose (a
        // Transpose of that layout took 1.6 ms for 256x256 channels on 2x2 maps)
        const spread = new Float32Array(outPixels * taps * inPixels);
        const r = kernel.length;
        for (let o = 0; o < outPixels; o++) {
          for (let t = 0; t < taps; t++) {
            let inIndex = 0;
            let inside = true;
            for (let i = 0, oRest = o, tRest = t; i < r; i++) {
              const oInner = geo.out.slice(i + 1).reduce((p, d) => p * d, 1);
              const tInner = kernel.slice(i + 1).reduce((p, d) => p * d, 1);
              const at = Math.floor(oRest / oInner) * geo.strides[i]! + Math.floor(tRest / tInner) * geo.dilations[i]! - geo.pads[i]!;
              oRest %= oInner;
              tRest %= tInner;
              if (at < 0 || at >= xs[i + 2]!) inside = false;
              inIndex = inIndex * xs[i + 2]! + at;
            }
            if (inside) spread[(o * taps + t) * inPixels + inIndex] = 1;
          }
        }
        const spreadName = constTensor(spread, [1, outPixels, taps, inPixels]);
        const dense = b.reshape(b.op('MatMul', [b.reshape(ins[1]!, [ws[0]!, 1, ws[1]!, taps]), spreadName]), [ws[0]! * outPixels, ws[1]! * inPixels]);
        const y = b.op('Gemm', [b.reshape(ins[0]!, [xs[0]!, xs[1]! * inPixels]), dense], { transB: 1 });
        const shaped = [xs[0]!, ws[0]!, ...geo.out];
        if (!ins[2]) b.add('Reshape', [y, b.constI64(shaped)], {}, [n.outputs[0]!]);
        else b.add('Add', [b.reshape(y, shaped), b.reshape(ins[2], [ws[0]!, ...geo.out.map(() => 1)])], {}, [n.outputs[0]!]);
        return;
      }
      if (!crop) return b.copy(proto);
      const w = croppedWeight(crop);
      return copyWith([ins[0]!, w, ...ins.slice(2)], ['pads', 'auto_pad', 'kernel_shape'], [
        { name: 'pads', type: 7, ints: crop.pads },
        { name: 'kernel_shape', type: 7, ints: kept },
      ]);
    }
    case 'Slice':
      if (opset >= 10) return b.copy(proto);
      return copyWith([ins[0]!, b.constI64(a.ints('starts', [])), b.constI64(a.ints('ends', [])), ...(a.has('axes') ? [b.constI64(a.ints('axes', []))] : [])], ['starts', 'ends', 'axes']);
    default:
      if (REDUCE_OPS.has(n.opType) && !reduceAxesFromInput(n.opType, opset) && a.has('axes')) {
        return copyWith([ins[0]!, b.constI64(a.ints('axes', []))], ['axes']);
      }
      return b.copy(proto);
  }
}

/** Static shapes of a prepared graph's values at a batch size (the free batch dimension filled in). */
export function shapeLookup(p: PreparedGraph, batch: number): (name: string) => number[] {
  return (name: string) => {
    const s = p.shapes.get(name) ?? p.inputs.find((i) => i.name === name)?.shape ?? p.params.get(name)?.shape ?? p.consts.get(name)?.shape ?? p.symConsts.get(name)?.base.shape;
    if (!s) throw new NotCompilableError(`no shape known for '${name}'`);
    return s.map((d) => (d === 'N' ? batch : (d as number)));
  };
}
