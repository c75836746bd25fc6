// A model whose weights are fed as inputs, split in two: the nodes that read only weights and constants
// (filters reordered into the blocked layout, flipped kernels of input gradients, BatchNorm scale folding)
// and the rest. Attack sessions call the first once per weight set and feed its outputs to the second at
// every call: with weights fed, onnxruntime cannot fold that work away as it does for baked weights, and on
// ResNet-18 it cost ~17 ms per PGD step.
import { GraphBuilder } from '../../onnx/builder.js';
import type { NodeProto } from '../../onnx/proto.js';

/** Operators whose float inputs give float outputs (the hoisted values are declared float32 inputs). */
const FLOAT_OPS = new Set([
  'Reshape', 'Transpose', 'Pad', 'Slice', 'Concat', 'Unsqueeze', 'Squeeze', 'Flatten', 'Identity', 'Gather',
  'Mul', 'Add', 'Sub', 'Div', 'Neg', 'Sqrt', 'Reciprocal', 'MatMul', 'Gemm', 'ReorderInput',
]);

export interface WeightSplit {
  /** inputs: the weights it reads; outputs: `hoisted` */
  prep: GraphBuilder;
  /** the rest, taking the hoisted values (and the weights it still reads) as inputs */
  main: GraphBuilder;
  hoisted: string[];
}

/**
 * Split `src` (outputs set) at the values computed from the weights `params` alone. Undefined when no node
 * qualifies. `shapeOf` gives the static shape of a hoisted value (read off a run of the prep model).
 */
export function splitWeightPrep(src: GraphBuilder, params: readonly string[], shapeOf: (prep: GraphBuilder, names: string[]) => Map<string, number[]>): WeightSplit | undefined {
  const constant = new Set(src.initializers.map((t) => t.name ?? ''));
  const derived = new Set(params);
  const prepNodes: NodeProto[] = [];
  const mainNodes: NodeProto[] = [];
  for (const n of src.nodes) {
    const ins = (n.input ?? []).filter((v) => v);
    const hoist = FLOAT_OPS.has(n.opType ?? '') && ins.every((v) => derived.has(v) || constant.has(v)) && ins.some((v) => derived.has(v));
    if (hoist) {
      prepNodes.push(n);
      for (const o of n.output ?? []) derived.add(o);
    } else mainNodes.push(n);
  }
  if (!prepNodes.length) return undefined;
  const prepOut = new Set(prepNodes.flatMap((n) => n.output ?? []));
  const mainReads = new Set([...mainNodes.flatMap((n) => n.input ?? []), ...src.outputs.map((o) => o.name)]);
  const hoisted = [...prepOut].filter((v) => mainReads.has(v));
  if (!hoisted.length) return undefined;

  const prep = new GraphBuilder(src.opset, 'prep');
  const prepReads = new Set(prepNodes.flatMap((n) => n.input ?? []));
  for (const i of src.inputs) if (prepReads.has(i.name)) prep.input(i.name, i.dtype, i.shape);
  prep.initializers.push(...src.initializers.filter((t) => prepReads.has(t.name ?? '')));
  for (const n of prepNodes) prep.copy(n);
  prep.setOutputs(hoisted);

  const shapes = shapeOf(prep, hoisted);
  const main = new GraphBuilder(src.opset, 'main');
  for (const i of src.inputs) if (mainReads.has(i.name)) main.input(i.name, i.dtype, i.shape);
  for (const v of hoisted) main.input(v, 'float32', shapes.get(v)!);
  main.initializers.push(...src.initializers.filter((t) => mainReads.has(t.name ?? '')));
  for (const n of mainNodes) main.copy(n);
  main.setOutputs(src.outputs.map((o) => o.name));
  return { prep, main, hoisted };
}
