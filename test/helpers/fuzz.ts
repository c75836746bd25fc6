// Mutated versions of a seed ONNX model, for the importer's fuzz test: truncations, byte flips and
// structural edits. Each case is a file (and sometimes a side file) in a folder of its own; which
// mutation is applied where is decided by a seeded generator, so a seed names a set of files exactly.
import fs from 'node:fs';
import path from 'node:path';
import { onnx, type ModelProto, type NodeProto, type TensorProto } from '../../src/onnx/proto.js';
import { makeRng, type Rng } from '../../src/util/rng.js';

export interface FuzzCase {
  /** e.g. `017-pads` */
  name: string;
  category: string;
  /** the mutated model file */
  file: string;
}

type Mutation = (m: ModelProto, rng: Rng, dir: string) => void;

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
const nodes = (m: ModelProto): NodeProto[] => m.graph!.node ?? [];
const inits = (m: ModelProto): TensorProto[] => m.graph!.initializer ?? [];
const floatInits = (m: ModelProto): TensorProto[] => inits(m).filter((t) => t.dataType === 1 && (t.dims ?? []).length > 0);
const withInputs = (m: ModelProto): NodeProto[] => nodes(m).filter((n) => (n.input ?? []).length > 0);
const ofType = (m: ModelProto, types: string[]): NodeProto[] => nodes(m).filter((n) => types.includes(n.opType ?? ''));

function setIntsAttr(n: NodeProto, name: string, ints: number[]): void {
  const AT = onnx.AttributeProto.AttributeType;
  n.attribute = (n.attribute ?? []).filter((a) => a.name !== name);
  n.attribute.push({ name, type: AT.INTS, ints });
}
function setIntAttr(n: NodeProto, name: string, i: number): void {
  const AT = onnx.AttributeProto.AttributeType;
  n.attribute = (n.attribute ?? []).filter((a) => a.name !== name);
  n.attribute.push({ name, type: AT.INT, i });
}

/** Structural edits, by category. Each one leaves a model that protobuf still decodes. */
const STRUCTURAL: Record<string, Mutation> = {
  'unknown-op': (m, rng) => void (pick(rng, nodes(m)).opType = pick(rng, ['FancyConv', 'Mystery', 'Conv3000'])),
  'custom-domain': (m, rng) => void (pick(rng, nodes(m)).domain = 'com.example.private'),
  cycle: (m, rng) => {
    const ns = withInputs(m);
    const i = Math.floor(rng() * ns.length);
    const later = ns.slice(i + 1).flatMap((n) => n.output ?? []);
    const target = ns[i]!;
    target.input![0] = later.length ? pick(rng, later) : target.output![0]!;
  },
  'dangling-input': (m, rng) => {
    const n = pick(rng, withInputs(m));
    n.input![Math.floor(rng() * n.input!.length)] = `missing_${Math.floor(rng() * 1000)}`;
  },
  'duplicate-name': (m, rng) => {
    const ns = nodes(m);
    if (ns.length >= 2) ns[ns.length - 1]!.output![0] = pick(rng, ns.slice(0, -1)).output![0]!;
  },
  'no-output': (m) => void (m.graph!.output = []),
  'output-not-produced': (m) => void (m.graph!.output![0]!.name = 'nobody_makes_this'),
  'no-input': (m) => void (m.graph!.input = (m.graph!.input ?? []).filter((i) => inits(m).some((t) => t.name === i.name))),
  'opset-absurd': (m, rng) => void (m.opsetImport = [{ domain: '', version: pick(rng, [0, 1, 5, 99, 100000]) }]),
  'no-opset': (m) => void (m.opsetImport = []),
  'ir-version': (m, rng) => void (m.irVersion = pick(rng, [0, 1, 2])),
  'empty-op-type': (m, rng) => void (pick(rng, nodes(m)).opType = ''),
  'wrong-dims': (m, rng) => {
    const t = pick(rng, floatInits(m));
    const d = (t.dims ?? []).map(Number);
    const k = Math.floor(rng() * d.length);
    d[k] = d[k]! + 1 + Math.floor(rng() * 3);
    t.dims = d;
  },
  'swapped-dims': (m, rng) => {
    const t = pick(rng, floatInits(m).filter((x) => (x.dims ?? []).length >= 2));
    if (!t) return;
    const d = (t.dims ?? []).map(Number);
    [d[0], d[1]] = [d[1]!, d[0]!];
    t.dims = d;
  },
  'huge-dims-no-data': (m, rng) => {
    const t = pick(rng, floatInits(m));
    t.dims = [2 ** 20, 2 ** 20];
    t.rawData = new Uint8Array(0);
    t.floatData = [];
  },
  'int64-dims': (m, rng) => {
    const t = pick(rng, floatInits(m));
    t.dims = [pick(rng, [2 ** 40, 2 ** 53, -5, 0x7fffffff])];
  },
  'nan-weights': (m, rng) => {
    const t = pick(rng, floatInits(m));
    const raw = t.rawData!;
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const count = 1 + Math.floor(rng() * 5);
    for (let c = 0; c < count; c++) dv.setFloat32(4 * Math.floor(rng() * (raw.byteLength / 4)), pick(rng, [NaN, Infinity, -Infinity]), true);
  },
  'external-outside': (m, rng) => {
    const t = pick(rng, floatInits(m));
    t.rawData = new Uint8Array(0);
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    t.externalData = [{ key: 'location', value: pick(rng, ['../../../../etc/passwd', '/etc/passwd', '../outside.bin']) }];
  },
  'external-missing': (m, rng) => {
    const t = pick(rng, floatInits(m));
    t.rawData = new Uint8Array(0);
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    t.externalData = [{ key: 'location', value: 'weights_not_here.bin' }];
  },
  'external-short': (m, rng, dir) => {
    const t = pick(rng, floatInits(m));
    fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.alloc(16));
    t.rawData = new Uint8Array(0);
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    t.externalData = [{ key: 'location', value: 'weights.bin' }, { key: 'offset', value: String(pick(rng, [0, 8, 4096])) }, { key: 'length', value: String(pick(rng, [1e12, 1024, -4])) }];
  },
  pads: (m, rng) => {
    const n = pick(rng, ofType(m, ['Conv', 'MaxPool', 'AveragePool']).concat(ofType(m, ['Conv'])));
    if (!n) return;
    const p = pick(rng, [1000, 5000, 100000]);
    setIntsAttr(n, 'pads', [p, p, p, p]);
  },
  'negative-pads': (m, rng) => {
    const n = pick(rng, ofType(m, ['Conv']));
    if (n) setIntsAttr(n, 'pads', [-30, -30, -30, -30]);
  },
  strides: (m, rng) => {
    const n = pick(rng, ofType(m, ['Conv']));
    if (n) setIntsAttr(n, 'strides', pick(rng, [[0, 0], [-1, 1], [1000, 1000], [1]]));
  },
  dilations: (m, rng) => {
    const n = pick(rng, ofType(m, ['Conv']));
    if (n) setIntsAttr(n, 'dilations', pick(rng, [[0, 0], [100, 100], [1, 1, 1]]));
  },
  'kernel-shape': (m, rng) => {
    const n = pick(rng, ofType(m, ['Conv']));
    if (n) setIntsAttr(n, 'kernel_shape', pick(rng, [[1000, 1000], [3], [0, 0]]));
  },
  group: (m, rng) => {
    const n = pick(rng, ofType(m, ['Conv']));
    if (n) setIntAttr(n, 'group', pick(rng, [0, 3, -1, 1000]));
  },
  'gemm-trans': (m, rng) => {
    const n = pick(rng, ofType(m, ['Gemm']));
    if (n) setIntAttr(n, 'transB', pick(rng, [0, 7]));
  },
  'flatten-axis': (m, rng) => {
    const n = pick(rng, ofType(m, ['Flatten', 'Softmax', 'Concat', 'Gather']));
    if (n) setIntAttr(n, 'axis', pick(rng, [10, -10, 2 ** 40]));
  },
  'input-shape': (m, rng) => {
    const inp = m.graph!.input!.find((i) => !inits(m).some((t) => t.name === i.name))!;
    const dims = inp.type?.tensorType?.shape?.dim ?? [];
    if (dims.length) dims[dims.length - 1] = pick(rng, [{ dimValue: 0 }, { dimValue: 100000 }, { dimValue: 2 ** 40 }, { dimParam: 'w' }]);
  },
  'input-rank': (m) => {
    const inp = m.graph!.input!.find((i) => !inits(m).some((t) => t.name === i.name))!;
    inp.type!.tensorType!.shape!.dim = [{ dimParam: 'batch' }];
  },
  'input-type': (m, rng) => {
    const inp = m.graph!.input!.find((i) => !inits(m).some((t) => t.name === i.name))!;
    inp.type!.tensorType!.elemType = pick(rng, [7, 8, 9, 2, 0, 99]);
  },
  'init-type': (m, rng) => void (pick(rng, floatInits(m)).dataType = pick(rng, [0, 8, 14, 99, 7])),
  'drop-initializer': (m, rng) => {
    const g = m.graph!;
    const t = pick(rng, floatInits(m));
    g.initializer = inits(m).filter((x) => x !== t);
  },
  'drop-node': (m, rng) => {
    const g = m.graph!;
    const n = pick(rng, nodes(m));
    g.node = nodes(m).filter((x) => x !== n);
  },
  'extra-input': (m, rng) => {
    const n = pick(rng, withInputs(m));
    n.input!.push(n.input![0]!, n.input![0]!, n.input![0]!);
  },
  'reshape-target': (m, rng) => {
    const n = pick(rng, ofType(m, ['Reshape']));
    if (!n) return;
    m.graph!.initializer!.push({ name: 'fuzz_shape', dataType: 7, dims: [2], int64Data: pick(rng, [[-1, -1], [7, 13], [0, 2 ** 40], [-1, 0]]) });
    n.input![1] = 'fuzz_shape';
  },
  'sparse-bad-indices': (m, rng) => {
    const t = pick(rng, floatInits(m));
    const g = m.graph!;
    g.initializer = inits(m).filter((x) => x !== t);
    g.sparseInitializer = [{
      values: { name: t.name, dataType: 1, dims: [2], floatData: [1, 2] },
      indices: { dataType: 7, dims: [2], int64Data: pick(rng, [[0, 2 ** 40], [-3, 1], [5, 5]]) },
      dims: pick(rng, [t.dims ?? [], [2 ** 20, 2 ** 20]]),
    }];
  },
};

/** Byte-level mutations of an encoded file. */
function truncate(bytes: Uint8Array, rng: Rng): Uint8Array {
  return bytes.slice(0, Math.floor(rng() * bytes.length));
}
function flipBytes(bytes: Uint8Array, rng: Rng): Uint8Array {
  const out = bytes.slice();
  const flips = 1 + Math.floor(rng() * 8);
  // most of a model file is weight data, where a flip changes a number; aim half of them at the
  // structure (graph nodes, attributes, shapes) that sits near the start or the end
  for (let f = 0; f < flips; f++) {
    const near = rng() < 0.5 ? Math.floor(rng() * Math.min(2048, out.length)) : out.length - 1 - Math.floor(rng() * Math.min(2048, out.length));
    const at = rng() < 0.6 ? near : Math.floor(rng() * out.length);
    out[at] = out[at]! ^ (1 << Math.floor(rng() * 8));
  }
  return out;
}

/**
 * `count` mutated copies of the model at `seedFile`, written under `outDir/<case>/model.onnx`. The mix:
 * every structural category at least once (in a seeded order), the rest split between truncations and byte flips.
 */
export function makeFuzzCases(seedFile: string, seed: number, count: number, outDir: string): FuzzCase[] {
  const original = new Uint8Array(fs.readFileSync(seedFile)); // a copy (Buffer.slice would share memory)
  const rng = makeRng(`fuzz:${seed}`);
  const categories = Object.keys(STRUCTURAL);
  const plan: string[] = [];
  for (let i = 0; i < count; i++) {
    if (i < categories.length) plan.push(categories[i]!);
    else plan.push(pick(rng, ['truncate', 'flip', 'flip', pick(rng, categories)]));
  }
  const cases: FuzzCase[] = [];
  plan.forEach((category, i) => {
    const name = `${String(i).padStart(3, '0')}-${category}`;
    const dir = path.join(outDir, name);
    fs.mkdirSync(dir, { recursive: true });
    let bytes: Uint8Array;
    if (category === 'truncate') bytes = truncate(original, rng);
    else if (category === 'flip') bytes = flipBytes(original, rng);
    else {
      const m = onnx.ModelProto.decode(original);
      STRUCTURAL[category]!(m, rng, dir);
      bytes = onnx.ModelProto.encode(m).finish();
    }
    const file = path.join(dir, 'model.onnx');
    fs.writeFileSync(file, bytes);
    cases.push({ name, category, file });
  });
  return cases;
}
