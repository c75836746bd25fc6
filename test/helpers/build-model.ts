// Build small ONNX models directly as protobuf messages (fixtures for I/O and error tests).
import { onnx, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../../src/onnx/proto.js';
import { encodeTensor, type DType, hostTensor, dtypeCode } from '../../src/onnx/tensor.js';

export interface ValueSpec { name: string; dtype?: DType; shape: (number | string)[] }

export function valueInfo(v: ValueSpec): ValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: dtypeCode(v.dtype ?? 'float32'),
        shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

export function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, number | number[] | string> = {}, name = ''): NodeProto {
  const AT = onnx.AttributeProto.AttributeType;
  return {
    opType, input: inputs, output: outputs, name,
    attribute: Object.entries(attrs).map(([k, v]) => {
      if (typeof v === 'string') return { name: k, type: AT.STRING, s: Buffer.from(v) };
      if (Array.isArray(v)) return { name: k, type: AT.INTS, ints: v };
      return Number.isInteger(v) ? { name: k, type: AT.INT, i: v } : { name: k, type: AT.FLOAT, f: v };
    }),
  };
}

export function floatInit(name: string, shape: number[], values: number[]): TensorProto {
  return encodeTensor(name, hostTensor('float32', shape, values));
}

export function buildModel(spec: {
  inputs: ValueSpec[]; outputs: ValueSpec[]; nodes: NodeProto[]; initializers?: TensorProto[]; opset?: number; docString?: string;
}): ModelProto {
  return onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'onnx-hydra-tests',
    docString: spec.docString ?? '',
    opsetImport: [{ domain: '', version: spec.opset ?? 13 }],
    graph: {
      name: 'g',
      input: spec.inputs.map(valueInfo),
      output: spec.outputs.map(valueInfo),
      node: spec.nodes,
      initializer: spec.initializers ?? [],
    },
  });
}

export function encode(m: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(m).finish();
}
