// Small helpers shared by the gradient rules of every operator family.
import type { GraphBuilder } from '../onnx/builder.js';
import type { GradCtx } from './spec.js';

export const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

/** The gradient flowing into output 0. */
export const dy0 = (g: GradCtx): string => g.dy(0)!;
export const zero = (g: GradCtx): string => g.b.scalarF(0);

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
