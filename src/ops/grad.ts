// Small helpers shared by the gradient rules of every operator family.
import type { GraphBuilder } from '../onnx/builder.js';
import type { GradCtx } from './spec.js';

export const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

/** The gradient flowing into output 0. */
export const dy0 = (g: GradCtx): string => g.dy(0)!;
/**
 * A zero of output 0's rank ([1, 1, …]): onnxruntime broadcasts a rank-0 scalar over shapes ending in 1s
 * (e.g. [N, C, 1, 1]) element by element, 10-20x slower than a same-rank constant.
 */
export const zero = (g: GradCtx): string => g.b.constF([0], g.outShape(0).map(() => 1));

/** Sum a broadcast gradient back to the shape of the input it came from. */
export function reduceTo(b: GraphBuilder, grad: string, gShape: number[], target: number[]): string {
  if (gShape.join() === target.join()) return grad;
  const off = gShape.length - target.length;
  const axes: number[] = [];
  for (let i = 0; i < gShape.length; i++) {
    if (i < off || (target[i - off] === 1 && gShape[i] !== 1)) axes.push(i);
  }
  const summed = axes.length ? b.reduce('ReduceSum', grad, axes, true) : grad;
  // (kept dimensions: already the target's shape when the ranks agree; a Reshape there copies when its output
  // leaves the graph)
  return off === 0 ? summed : b.reshape(summed, target);
}
