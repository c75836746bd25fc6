// Reading, validating and writing ONNX ModelProto files.
import fs from 'node:fs';
import path from 'node:path';
import { onnx, toNum, type ModelProto, type NodeProto, type GraphProto, type ValueInfoProto } from './proto.js';
import { OnnxError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';

export interface OnnxModel {
  proto: ModelProto;
  /** the file it was read from (for messages and external data), if any */
  file?: string;
  /** opset version per domain; '' / 'ai.onnx' is the default domain */
  opsets: Map<string, number>;
  /** opset of the default domain */
  opset: number;
}

export function nodeLabel(n: NodeProto, index: number): string {
  return n.name ? `${n.opType} node '${n.name}'` : `${n.opType} node #${index} (unnamed)`;
}

/** Parse an ONNX model from a file path or bytes. Throws a one-line OnnxError for anything that is not a valid model. */
export function loadModel(src: string | Uint8Array, opts: { validate?: boolean } = {}): OnnxModel {
  let bytes: Uint8Array;
  let file: string | undefined;
  if (typeof src === 'string') {
    file = path.resolve(src);
    if (!fs.existsSync(file)) throw new OnnxError(`model file '${src}' not found`);
    if (fs.statSync(file).isDirectory()) throw new OnnxError(`'${src}' is a folder, not an ONNX model file`);
    bytes = fs.readFileSync(file);
  } else {
    bytes = src;
  }
  const what = file ? `'${src as string}'` : 'the buffer';
  if (bytes.length === 0) throw new OnnxError(`${what} is empty, not an ONNX model`);
  let proto: ModelProto;
  try {
    proto = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new OnnxError(`${what} is not a valid ONNX model (truncated or not protobuf: ${(e as Error).message})`);
  }
  if (!proto.graph || (!proto.graph.node?.length && !proto.graph.output?.length)) {
    throw new OnnxError(`${what} is not an ONNX model: it has no graph`);
  }
  const opsets = new Map<string, number>();
  for (const o of proto.opsetImport ?? []) opsets.set(o.domain === 'ai.onnx' ? '' : (o.domain ?? ''), toNum(o.version));
  const model: OnnxModel = { proto, file, opsets, opset: opsets.get('') ?? 0 };
  if (opts.validate !== false) validateModel(model, what);
  return model;
}

/** Structural checks: versions, inputs/outputs, names defined once and before use, no cycles. */
export function validateModel(model: OnnxModel, what = 'model'): void {
  const { proto } = model;
  const ir = toNum(proto.irVersion);
  if (ir < 3) throw new OnnxError(`${what}: ir_version ${ir} is too old or missing (not an ONNX model?)`);
  if (!model.opsets.has('')) throw new OnnxError(`${what}: no opset_import for the default ONNX domain`);
  const g = proto.graph!;
  validateGraph(g, what);
}

function validateGraph(g: GraphProto, what: string): void {
  const defined = new Map<string, string>(); // name -> what defines it
  const define = (name: string, by: string): void => {
    if (!name) return;
    const prev = defined.get(name);
    // an initializer may also be listed as a graph input (IR < 4 style)
    if (prev && !(prev.startsWith('graph input') && by.startsWith('initializer'))) {
      throw new OnnxError(`${what}: name '${name}' is defined twice (by ${prev} and by ${by})`);
    }
    defined.set(name, by);
  };
  for (const i of g.input ?? []) define(i.name ?? '', `graph input '${i.name}'`);
  for (const t of g.initializer ?? []) define(t.name ?? '', `initializer '${t.name}'`);
  for (const t of g.sparseInitializer ?? []) define(t.values?.name ?? '', `sparse initializer '${t.values?.name}'`);
  const nodes = g.node ?? [];
  nodes.forEach((n, i) => {
    if (!n.opType) throw new OnnxError(`${what}: node #${i} '${n.name ?? ''}' has no op_type`);
    for (const o of n.output ?? []) define(o, nodeLabel(n, i));
  });
  if (!(g.input ?? []).some((i) => !(g.initializer ?? []).some((t) => t.name === i.name))) {
    throw new OnnxError(`${what}: the graph has no inputs`);
  }
  if (!(g.output ?? []).length) throw new OnnxError(`${what}: the graph has no outputs`);
  nodes.forEach((n, i) => {
    for (const inp of n.input ?? []) {
      if (inp && !defined.has(inp)) throw new OnnxError(`${what}: ${nodeLabel(n, i)} reads '${inp}', which nothing defines`);
    }
  });
  for (const o of g.output ?? []) {
    if (!defined.has(o.name ?? '')) throw new OnnxError(`${what}: graph output '${o.name}' is not produced by any node`);
  }
  topoOrder(nodes, (g.input ?? []).map((i) => i.name ?? '').concat((g.initializer ?? []).map((t) => t.name ?? '')), what);
}

/**
 * Indices of nodes in an order where every input is defined before use (ONNX asks files to be sorted, not
 * every exporter does). Names in `available` are defined up front. Throws naming a node on a cycle.
 */
export function topoOrder(nodes: NodeProto[], available: string[], what = 'model'): number[] {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => (n.output ?? []).forEach((o) => o && producer.set(o, i)));
  const avail = new Set(available);
  const order: number[] = [];
  const state = new Uint8Array(nodes.length); // 0 new, 1 on stack, 2 done
  for (let start = 0; start < nodes.length; start++) {
    if (state[start]) continue;
    // iterative DFS so deep graphs do not overflow the stack
    const stack: [number, number][] = [[start, 0]];
    state[start] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [ni, k] = top;
      const ins = nodes[ni]!.input ?? [];
      if (k < ins.length) {
        top[1]++;
        const name = ins[k]!;
        if (!name || avail.has(name)) continue;
        const p = producer.get(name);
        if (p === undefined) continue; // dangling names are reported by validateGraph
        if (state[p] === 1) throw new OnnxError(`${what}: the graph has a cycle through ${nodeLabel(nodes[p]!, p)} and ${nodeLabel(nodes[ni]!, ni)}`);
        if (state[p] === 0) {
          state[p] = 1;
          stack.push([p, 0]);
        }
      } else {
        state[ni] = 2;
        order.push(ni);
        stack.pop();
      }
    }
  }
  return order;
}

export function encodeModel(model: OnnxModel | ModelProto): Uint8Array {
  const proto = 'proto' in model ? model.proto : model;
  return onnx.ModelProto.encode(proto).finish();
}

/** Write the model to `file` atomically (temporary file + rename): never a half-written file under the final name. */
export function saveModel(model: OnnxModel | ModelProto, file: string): number {
  const bytes = encodeModel(model);
  writeFileAtomic(file, bytes);
  return bytes.length;
}

/** A structural copy that shares nothing with the original (decode(encode(x))). */
export function cloneModel(model: OnnxModel): OnnxModel {
  return { ...model, proto: onnx.ModelProto.decode(encodeModel(model)), opsets: new Map(model.opsets) };
}

export type Dim = number | string;

/** Declared shape of a graph input/output: numbers, or the dim_param name (or '?' when unnamed). */
export function declaredShape(v: ValueInfoProto): Dim[] | undefined {
  const tt = v.type?.tensorType;
  if (!tt || !tt.shape) return undefined;
  return (tt.shape.dim ?? []).map((d) => (d.dimValue !== null && d.dimValue !== undefined && toNum(d.dimValue) > 0 ? toNum(d.dimValue) : d.dimParam || '?'));
}

export function declaredElemType(v: ValueInfoProto): number | undefined {
  return v.type?.tensorType?.elemType ?? undefined;
}

/** Graph inputs that are not initializers (the real inputs). */
export function realInputs(g: GraphProto): ValueInfoProto[] {
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  return (g.input ?? []).filter((i) => !inits.has(i.name));
}
