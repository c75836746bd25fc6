// Multiply-accumulates of one example's forward pass, from the shapes seen while tracing the graph: the
// dense products (Conv, ConvTranspose, Gemm, MatMul) that dominate a classifier's cost; elementwise work,
// pooling and normalisation are not counted (the usual convention of MAC counters such as thop/ptflops).
import type { PreparedGraph } from './graph.js';
import { Attrs } from '../ops/ir.js';

export interface MacCount {
  /** per example (the batch dimension is 1) */
  total: number;
  layers: { node: string; op: string; macs: number }[];
}

const prod = (xs: readonly number[]): number => xs.reduce((p, d) => p * d, 1);

export function countMacs(g: PreparedGraph): MacCount {
  const shapeOf = (name: string): number[] | undefined => {
    const s = g.shapes.get(name) ?? g.consts.get(name)?.shape ?? g.paramInit.get(name)?.shape ?? g.inputs.find((i) => i.name === name)?.shape;
    return s?.map((d) => (typeof d === 'number' ? d : 1));
  };
  // a fixed batch dimension (an input declared [8,3,32,32]) is divided out; a free one is traced as 1 here
  const batch = typeof g.inputs[0]?.shape[0] === 'number' && g.inputs[0].shape[0] > 0 ? g.inputs[0].shape[0] : 1;
  const layers: MacCount['layers'] = [];
  for (const n of g.runNodes) {
    const out = n.outputs[0] ? shapeOf(n.outputs[0]) : undefined;
    const a = shapeOf(n.inputs[0] ?? '');
    const b = shapeOf(n.inputs[1] ?? '');
    if (!out || !a || !b) continue;
    let macs: number;
    // Conv: every output element sums Cin/group × kernel products (weight [Cout, Cin/group, k…])
    if (n.opType === 'Conv') macs = prod(out) * prod(b.slice(1));
    // ConvTranspose: every input element is spread over Cout/group × kernel outputs (weight [Cin, Cout/group, k…])
    else if (n.opType === 'ConvTranspose') macs = prod(a) * prod(b.slice(1));
    else if (n.opType === 'Gemm') macs = prod(out) * (new Attrs(n).int('transA', 0) ? a[0]! : a[1]!);
    else if (n.opType === 'MatMul') macs = prod(out) * a[a.length - 1]!;
    else continue;
    layers.push({ node: n.name || `#${n.index}`, op: n.opType, macs: macs / batch });
  }
  return { total: layers.reduce((s, l) => s + l.macs, 0), layers };
}
