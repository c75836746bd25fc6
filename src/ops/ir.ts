// A light, parsed view of ONNX nodes: attributes decoded once, labels for error messages.
import { onnx, toNum, type NodeProto, type AttributeProto } from '../onnx/proto.js';
import { decodeTensor, type HostTensor } from '../onnx/tensor.js';
import { nodeLabel } from '../onnx/model.js';
import { OnnxError } from '../util/errors.js';

export type AttrValue = number | string | number[] | string[] | HostTensor | { subgraph: true };

export interface Node {
  index: number;
  name: string;
  /** e.g. "Conv node 'conv1'" — used in every error about this node */
  label: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attrs: Map<string, AttrValue>;
  proto: NodeProto;
}

const AT = onnx.AttributeProto.AttributeType;

function decodeAttr(a: AttributeProto, where: string, baseDir?: string): AttrValue {
  switch (a.type) {
    case AT.FLOAT: return a.f ?? 0;
    case AT.INT: return toNum(a.i);
    case AT.STRING: return Buffer.from(a.s ?? new Uint8Array()).toString('utf8');
    case AT.TENSOR: return decodeTensor(a.t!, { baseDir, where: `${where} attribute '${a.name}'` });
    case AT.FLOATS: return (a.floats ?? []).slice();
    case AT.INTS: return (a.ints ?? []).map(toNum);
    case AT.STRINGS: return (a.strings ?? []).map((s) => Buffer.from(s).toString('utf8'));
    case AT.GRAPH: case AT.GRAPHS: return { subgraph: true };
    default:
      // files written without the `type` field (very old exporters): infer from which field is set
      if (a.ints?.length) return a.ints.map(toNum);
      if (a.floats?.length) return a.floats.slice();
      if (a.t) return decodeTensor(a.t, { baseDir, where: `${where} attribute '${a.name}'` });
      if (a.s?.length) return Buffer.from(a.s).toString('utf8');
      if (a.strings?.length) return a.strings.map((s) => Buffer.from(s).toString('utf8'));
      if (a.g) return { subgraph: true };
      if (a.f) return a.f;
      return toNum(a.i);
  }
}

export function parseNode(p: NodeProto, index: number, baseDir?: string): Node {
  const label = nodeLabel(p, index);
  const attrs = new Map<string, AttrValue>();
  for (const a of p.attribute ?? []) attrs.set(a.name ?? '', decodeAttr(a, label, baseDir));
  const inputs = (p.input ?? []).slice();
  while (inputs.length && inputs[inputs.length - 1] === '') inputs.pop(); // trailing optional inputs left out
  return {
    index,
    name: p.name ?? '',
    label,
    opType: p.opType ?? '',
    domain: p.domain === 'ai.onnx' ? '' : (p.domain ?? ''),
    inputs,
    outputs: (p.output ?? []).slice(),
    attrs,
    proto: p,
  };
}

/** Typed attribute access that names the node and attribute when something is off. */
export class Attrs {
  constructor(private readonly node: Node) {}
  has(name: string): boolean {
    return this.node.attrs.has(name);
  }
  private bad(name: string, want: string): never {
    throw new OnnxError(`${this.node.label}: attribute '${name}' should be ${want}`);
  }
  int(name: string, dflt: number): number;
  int(name: string): number | undefined;
  int(name: string, dflt?: number): number | undefined {
    const v = this.node.attrs.get(name);
    if (v === undefined) return dflt;
    if (typeof v !== 'number') this.bad(name, 'an int');
    return v;
  }
  float(name: string, dflt: number): number;
  float(name: string): number | undefined;
  float(name: string, dflt?: number): number | undefined {
    const v = this.node.attrs.get(name);
    if (v === undefined) return dflt;
    if (typeof v !== 'number') this.bad(name, 'a float');
    return v;
  }
  ints(name: string, dflt: number[]): number[];
  ints(name: string): number[] | undefined;
  ints(name: string, dflt?: number[]): number[] | undefined {
    const v = this.node.attrs.get(name);
    if (v === undefined) return dflt;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) this.bad(name, 'a list of ints');
    return v as number[];
  }
  floats(name: string): number[] | undefined {
    const v = this.node.attrs.get(name);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) this.bad(name, 'a list of floats');
    return v as number[];
  }
  string(name: string, dflt: string): string;
  string(name: string): string | undefined;
  string(name: string, dflt?: string): string | undefined {
    const v = this.node.attrs.get(name);
    if (v === undefined) return dflt;
    if (typeof v !== 'string') this.bad(name, 'a string');
    return v;
  }
  strings(name: string): string[] | undefined {
    const v = this.node.attrs.get(name);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) this.bad(name, 'a list of strings');
    return v as string[];
  }
  tensor(name: string): HostTensor | undefined {
    const v = this.node.attrs.get(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || Array.isArray(v) || !('dtype' in v)) this.bad(name, 'a tensor');
    return v;
  }
}
