// Runs the official ONNX backend node tests (Debian package libonnx-testdata) through the tfjs graph.
import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../../src/tfjs/tf.js';
import { loadModel } from '../../src/onnx/model.js';
import { onnx } from '../../src/onnx/proto.js';
import { decodeTensor, isFloat, numberAt, type HostTensor } from '../../src/onnx/tensor.js';
import { TfGraph } from '../../src/graph/graph.js';
import { parseNode } from '../../src/ops/ir.js';
import { unsupportedReason } from '../../src/ops/index.js';
import { hostToTf, type Val } from '../../src/ops/values.js';
import { UnsupportedOpsError } from '../../src/util/errors.js';

export const TESTDATA_DIRS = [
  process.env.ONNX_TESTDATA ?? '',
  '/usr/share/libonnx-testdata/data/node',
].filter(Boolean);

export function findTestdata(): string | undefined {
  return TESTDATA_DIRS.find((d) => fs.existsSync(d));
}

export type Outcome = { status: 'pass' } | { status: 'fail'; reason: string } | { status: 'skip'; reason: string };

const SUPPORTED_DTYPES = new Set(['float32', 'float64', 'float16', 'int32', 'int64', 'bool']);

function readPb(file: string): HostTensor {
  return decodeTensor(onnx.TensorProto.decode(fs.readFileSync(file)), { where: path.basename(file) });
}

/** Tests whose expected outputs come from random draws cannot be reproduced by any implementation. */
const RANDOM = /bernoulli|dropout_random|training_dropout(?!_zero_ratio)/;

export function runBackendTest(dir: string): Outcome {
  const name = path.basename(dir);
  if (RANDOM.test(name)) return { status: 'skip', reason: 'random output' };
  const model = loadModel(path.join(dir, 'model.onnx'), { validate: false });
  const g = model.proto.graph!;
  const nodes = (g.node ?? []).map((n, i) => parseNode(n, i));
  const bad = nodes.map((n) => [n, unsupportedReason(n, model.opset)] as const).filter(([, r]) => r);
  if (bad.length) return { status: 'skip', reason: `unsupported: ${[...new Set(bad.map(([n, r]) => `${n.opType} (${r})`))].join(', ')}` };
  const sets = fs.readdirSync(dir).filter((d) => d.startsWith('test_data_set_')).sort();
  if (!sets.length) return { status: 'skip', reason: 'no test data' };
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const inputNames = (g.input ?? []).map((i) => i.name ?? '').filter((n) => !inits.has(n));
  const outputNames = (g.output ?? []).map((o) => o.name ?? '');
  for (const set of sets) {
    const sdir = path.join(dir, set);
    let inputs: HostTensor[];
    let expected: HostTensor[];
    try {
      inputs = inputNames.map((_, i) => readPb(path.join(sdir, `input_${i}.pb`)));
      expected = outputNames.map((_, i) => readPb(path.join(sdir, `output_${i}.pb`)));
    } catch (e) {
      return { status: 'skip', reason: `test data not a plain tensor (${(e as Error).message.slice(0, 80)})` };
    }
    const dts = [...inputs, ...expected].map((t) => t.dtype).filter((d) => !SUPPORTED_DTYPES.has(d));
    if (dts.length) return { status: 'skip', reason: `dtype ${[...new Set(dts)].join(', ')} (the tfjs graph computes in float32/int32/bool)` };
    const shapes: Record<string, number[]> = {};
    inputNames.forEach((n, i) => (shapes[n] = inputs[i]!.shape));
    let graph: TfGraph | undefined;
    try {
      graph = TfGraph.fromModel(model, { inputShapes: shapes });
      const feeds: Val[] = inputs.map((t) => (isFloat(t.dtype) ? hostToTf(t) : t));
      const outs = tf.tidy(() => graph!.forward(feeds).outputs.map((o) => ({ shape: o.shape, data: o.dataSync().slice() as Float32Array | Int32Array | Uint8Array })));
      for (const f of feeds) if (f instanceof tf.Tensor) f.dispose();
      for (let k = 0; k < expected.length; k++) {
        const exp = expected[k]!;
        const got = outs[k]!;
        if (exp.shape.join() !== got.shape.join()) return { status: 'fail', reason: `${set} output ${k}: shape [${got.shape}] expected [${exp.shape}]` };
        // the backend tests' own default tolerance: rtol 1e-3, atol 1e-7
        for (let i = 0; i < got.data.length; i++) {
          const e = numberAt(exp, i);
          const a = got.data[i]!;
          if (Number.isNaN(e) && Number.isNaN(a)) continue;
          if (e === a) continue;
          if (!(Math.abs(a - e) <= 1e-7 + 1e-3 * Math.abs(e))) {
            return { status: 'fail', reason: `${set} output ${k}[${i}]: ${a} expected ${e}` };
          }
        }
      }
    } catch (e) {
      if (e instanceof UnsupportedOpsError) return { status: 'skip', reason: e.message };
      return { status: 'fail', reason: (e as Error).message.split('\n')[0]!.slice(0, 200) };
    } finally {
      graph?.dispose();
    }
  }
  return { status: 'pass' };
}

export function listBackendTests(root: string): string[] {
  return fs.readdirSync(root).filter((d) => fs.existsSync(path.join(root, d, 'model.onnx'))).sort().map((d) => path.join(root, d));
}
