import type { Node } from '../ir.js';
import type { OpCtx, Val } from '../values.js';

export interface OpDef {
  /** Why this particular node cannot be converted (an attribute value we do not implement); checked before any work. */
  unsupported?(node: Node, opset: number): string | undefined;
  /** Compute the outputs. Inputs may be host tensors (constants, shape chains) or tfjs tensors. */
  run(c: OpCtx): Val[];
}

const OPS = new Map<string, OpDef>();

export function defineOp(names: string | string[], def: OpDef): void {
  for (const n of Array.isArray(names) ? names : [names]) OPS.set(n, def);
}

export function getOp(opType: string, domain: string): OpDef | undefined {
  if (domain !== '' && domain !== 'ai.onnx') return undefined;
  return OPS.get(opType);
}

export function supportedOpTypes(): string[] {
  return [...OPS.keys()].sort();
}

/** The reason a node cannot be converted, or undefined when it can. */
export function unsupportedReason(node: Node, opset: number): string | undefined {
  if (node.domain !== '' && node.domain !== 'ai.onnx') return `custom domain '${node.domain}'`;
  const def = OPS.get(node.opType);
  if (!def) return 'no converter for this op';
  return def.unsupported?.(node, opset);
}
