// VNN-LIB fixtures whose answers are known by construction: two tiny ReLU networks written as ONNX with
// fixed weights, properties over them, and an instances.csv.
//
// abs.onnx, input [1, 2] (batch fixed to 1, as in VNN-COMP files, and a Reshape to the constant shape [1, 2]):
//   h = relu([x0 − x1, x1 − x0, x0 + x1 − 1]),  Y_0 = h0 + h1 = |x0 − x1|,  Y_1 = h2 + 0.5 = relu(x0 + x1 − 1) + 0.5
// softmax.onnx: abs.onnx followed by a Softmax.
// image.onnx, input [1, 1, 5, 5] (25 inputs: no input splitting), Flatten with axis 0 (so its batch dimension
//   cannot be freed: a batch would be flattened into one row), Gemm 25→4, Relu, Gemm 4→3, weights from a fixed formula.
import fs from 'node:fs';
import path from 'node:path';
import { buildModel, encode, floatInit, node } from './build-model.js';
import { encodeTensor, hostTensor } from '../../src/onnx/tensor.js';

export interface Fixture { file: string; expected: 'sat' | 'unsat'; why: string }

const IMAGE_W1 = Array.from({ length: 4 * 25 }, (_, i) => Math.sin(1.7 * i + 0.3) / 5);
const IMAGE_B1 = [0.1, -0.2, 0.3, 0.05];
const IMAGE_W2 = Array.from({ length: 3 * 4 }, (_, i) => Math.cos(0.9 * i + 0.1));
const IMAGE_B2 = [0.2, -0.1, 0];

/** image.onnx in float64 (W1 [4, 25] and W2 [3, 4] applied with transB). */
export function imageForward(x: number[]): number[] {
  const f = (v: number): number => Math.fround(v);
  const h = IMAGE_B1.map((b, r) => Math.max(0, x.reduce((s, v, c) => s + f(IMAGE_W1[r * 25 + c]!) * v, f(b))));
  return IMAGE_B2.map((b, r) => h.reduce((s, v, c) => s + f(IMAGE_W2[r * 4 + c]!) * v, f(b)));
}
export const IMAGE_CENTRE = Array.from({ length: 25 }, (_, i) => 0.5 + 0.4 * Math.sin(i));

/** abs.onnx; with `softmax`, followed by a Softmax (which interval bounds do not go through). */
function absModel(softmax = false): Uint8Array {
  return encode(buildModel({
    inputs: [{ name: 'x', shape: [1, 2] }],
    outputs: [{ name: softmax ? 'p' : 'y', shape: [1, 2] }],
    nodes: [
      node('Reshape', ['x', 'row'], ['x_row'], {}, 'reshape'),
      node('Gemm', ['x_row', 'w1', 'b1'], ['z'], { transB: 1 }, 'fc1'),
      node('Relu', ['z'], ['h'], {}, 'relu'),
      node('Gemm', ['h', 'w2', 'b2'], ['y'], { transB: 1 }, 'fc2'),
      ...(softmax ? [node('Softmax', ['y'], ['p'], { axis: 1 }, 'softmax')] : []),
    ],
    initializers: [
      encodeTensor('row', hostTensor('int64', [2], [1n, 2n])),
      floatInit('w1', [3, 2], [1, -1, -1, 1, 1, 1]),
      floatInit('b1', [3], [0, 0, -1]),
      floatInit('w2', [2, 3], [1, 1, 0, 0, 0, 1]),
      floatInit('b2', [2], [0, 0.5]),
    ],
  }));
}

function imageModel(): Uint8Array {
  return encode(buildModel({
    inputs: [{ name: 'image', shape: [1, 1, 5, 5] }],
    outputs: [{ name: 'scores', shape: [1, 3] }],
    nodes: [
      node('Flatten', ['image'], ['flat'], { axis: 0 }, 'flatten'),
      node('Gemm', ['flat', 'w1', 'b1'], ['z'], { transB: 1 }, 'fc1'),
      node('Relu', ['z'], ['h'], {}, 'relu'),
      node('Gemm', ['h', 'w2', 'b2'], ['scores'], { transB: 1 }, 'fc2'),
    ],
    initializers: [
      floatInit('w1', [4, 25], IMAGE_W1),
      floatInit('b1', [4], IMAGE_B1),
      floatInit('w2', [3, 4], IMAGE_W2),
      floatInit('b2', [3], IMAGE_B2),
    ],
  }));
}

const declare = (n: number, v: 'X' | 'Y'): string => Array.from({ length: n }, (_, i) => `(declare-const ${v}_${i} Real)`).join('\n');
const box = (lo: number[], hi: number[]): string => lo.map((l, i) => `(assert (>= X_${i} ${l}))\n(assert (<= X_${i} ${hi[i]}))`).join('\n');

/** Properties of abs.onnx with known answers (the unsafe region; sat = a counterexample exists). */
export const ABS_PROPERTIES: Record<string, { text: string; expected: 'sat' | 'unsat'; why: string }> = {
  joint_unsat: {
    text: `; |x0 − x1| ≥ 0.8 and x0 + x1 ≥ 1.4 have no common point in [0,1]²\n${declare(2, 'X')}\n${declare(2, 'Y')}\n${box([0, 0], [1, 1])}\n(assert (>= Y_0 0.8))\n(assert (>= Y_1 0.9))\n`,
    expected: 'unsat', why: 'x0 − x1 ≥ 0.8 forces x0 + x1 ≤ 1.2',
  },
  corner_sat: {
    text: `${declare(2, 'X')}\n${declare(2, 'Y')}\n${box([0, 0], [1, 1])}\n(assert (>= Y_0 0.9)) ; near (1,0) or (0,1)\n(assert (<= Y_1 0.55))\n`,
    expected: 'sat', why: 'x = (1, 0): Y = (1, 0.5)',
  },
  pgd_sat: {
    text: `${declare(2, 'X')}\n${declare(2, 'Y')}\n${box([0, 0], [1, 1])}\n(assert (>= Y_0 0.999))\n(assert (<= Y_1 0.5005))\n`,
    expected: 'sat', why: 'x = (1, 0): Y = (1, 0.5); the region is two triangles of area 5·10⁻⁷, out of reach of random sampling',
  },
  disjunction_unsat: {
    text: `${declare(2, 'X')}\n${declare(2, 'Y')}\n${box([0, 0], [1, 1])}\n(assert (or (and (>= Y_0 1.2)) (and (<= Y_1 0.4))))\n`,
    expected: 'unsat', why: 'Y_0 = |x0 − x1| ≤ 1 and Y_1 ≥ 0.5',
  },
  disjunction_sat: {
    text: `${declare(2, 'X')}\n${declare(2, 'Y')}\n${box([0, 0], [1, 1])}\n(assert (or (and (>= Y_0 1.2)) (and (<= Y_1 0.5) (>= Y_0 0.5))))\n`,
    expected: 'sat', why: 'x = (0.8, 0.1): Y = (0.7, 0.5) is in the second disjunct',
  },
  compare_unsat: {
    text: `${declare(2, 'X')}\n${declare(2, 'Y')}\n${box([0.9, 0], [1, 0.1])}\n(assert (<= Y_0 Y_1))\n`,
    expected: 'unsat', why: 'Y_0 ≥ 0.8 > 0.6 ≥ Y_1 on the box',
  },
};

/** Properties of image.onnx: a box of ±0.001 around IMAGE_CENTRE, output thresholds 1 away from the centre's. */
export function imageProperties(): Record<string, { text: string; expected: 'sat' | 'unsat'; why: string }> {
  const y = imageForward(IMAGE_CENTRE);
  const lo = IMAGE_CENTRE.map((v) => v - 0.001);
  const hi = IMAGE_CENTRE.map((v) => v + 0.001);
  const head = `${declare(25, 'X')}\n${declare(3, 'Y')}\n${box(lo, hi)}\n`;
  return {
    image_unsat: { text: `${head}(assert (<= Y_0 ${y[0]! - 1}))\n`, expected: 'unsat', why: 'Y_0 moves by far less than 1 in the box' },
    image_sat: { text: `${head}(assert (or (and (>= Y_1 ${y[1]! + 1})) (and (<= Y_2 ${y[2]! + 1}))))\n`, expected: 'sat', why: 'every input of the box is in the second disjunct' },
  };
}

/** Writes abs.onnx, image.onnx, the properties and instances.csv under `dir`; returns the fixtures. */
/** softmax.onnx (abs.onnx + Softmax): P_0 ≥ 0.99 needs Y_0 − Y_1 ≥ ln 99 ≈ 4.6, but Y_0 ≤ 1 and Y_1 ≥ 0.5 */
export const SOFTMAX_UNPROVABLE = `${declare(2, 'X')}\n${declare(2, 'Y')}\n${box([0, 0], [1, 1])}\n(assert (>= Y_0 0.99))\n`;

export function writeVnnlibFixtures(dir: string): { abs: string; image: string; softmax: string; csv: string; properties: Record<string, Fixture> } {
  fs.mkdirSync(path.join(dir, 'onnx'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'vnnlib'), { recursive: true });
  const abs = path.join(dir, 'onnx', 'abs.onnx');
  const image = path.join(dir, 'onnx', 'image.onnx');
  fs.writeFileSync(abs, absModel());
  fs.writeFileSync(image, imageModel());
  const softmax = path.join(dir, 'onnx', 'softmax.onnx');
  fs.writeFileSync(softmax, absModel(true));
  const properties: Record<string, Fixture> = {};
  for (const [name, p] of [...Object.entries(ABS_PROPERTIES), ...Object.entries(imageProperties())]) {
    const file = path.join(dir, 'vnnlib', `${name}.vnnlib`);
    fs.writeFileSync(file, p.text);
    properties[name] = { file, expected: p.expected, why: p.why };
  }
  const csv = path.join(dir, 'instances.csv');
  fs.writeFileSync(csv, [
    'onnx/abs.onnx,vnnlib/joint_unsat.vnnlib,30',
    'onnx/abs.onnx,vnnlib/corner_sat.vnnlib,30',
    'onnx/image.onnx,vnnlib/image_unsat.vnnlib,30',
    'onnx/image.onnx,vnnlib/image_sat.vnnlib,30',
  ].join('\n') + '\n');
  return { abs, image, softmax, csv, properties };
}
