import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadModel, saveModel, encodeModel } from '../src/onnx/model.js';
import { onnx } from '../src/onnx/proto.js';
import { decodeTensor, encodeTensor, floatToHalf, halfToFloat, hostTensor } from '../src/onnx/tensor.js';
import { TfGraph } from '../src/graph/graph.js';
import { tf } from '../src/tfjs/tf.js';
import { buildModel, encode, floatInit, node } from './helpers/build-model.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-io-'));

test('int64 values survive decode and encode exactly, via raw_data and via int64_data', () => {
  const vals = [9223372036854775807n, -9223372036854775808n, 2n ** 53n + 1n, -1n, 0n];
  const raw = encodeTensor('t', hostTensor('int64', [5], vals));
  const back = onnx.TensorProto.decode(onnx.TensorProto.encode(raw).finish());
  assert.deepEqual([...(decodeTensor(back).data as BigInt64Array)], vals);
  // typed field form (what some exporters write), values beyond 2^53 included
  const typed = onnx.TensorProto.decode(onnx.TensorProto.encode({ name: 't', dataType: 7, dims: [5], int64Data: vals.map((v) => v.toString()) as never }).finish());
  assert.deepEqual([...(decodeTensor(typed).data as BigInt64Array)], vals);
});

test('float16, double and int32 tensors decode from raw_data and typed fields alike', () => {
  for (const v of [0, 1, -2.5, 65504, 6.103515625e-5, 5.960464477539063e-8]) assert.equal(halfToFloat(floatToHalf(v)), v);
  const h = hostTensor('float16', [3], [1.5, -0.25, 1024]);
  assert.deepEqual([...decodeTensor(encodeTensor('h', h)).data as Float32Array], [1.5, -0.25, 1024]);
  const typed16 = { name: 'h', dataType: 10, dims: [2], int32Data: [floatToHalf(0.5), floatToHalf(-3)] };
  assert.deepEqual([...decodeTensor(typed16).data as Float32Array], [0.5, -3]);
  const d = decodeTensor({ name: 'd', dataType: 11, dims: [2], doubleData: [Math.PI, -1e300] });
  assert.deepEqual([...d.data as Float64Array], [Math.PI, -1e300]);
  assert.deepEqual([...decodeTensor(encodeTensor('d', d)).data as Float64Array], [Math.PI, -1e300]);
  assert.throws(() => decodeTensor({ name: 'bad', dataType: 1, dims: [3], rawData: new Uint8Array(8) }), /raw data has 8 bytes/);
});

function tinyModel(docString = '') {
  return buildModel({
    docString,
    inputs: [{ name: 'x', shape: ['batch', 3] }],
    outputs: [{ name: 'y', shape: ['batch', 2] }],
    nodes: [node('Gemm', ['x', 'W', 'b'], ['y'], { transB: 1 }, 'fc')],
    initializers: [floatInit('W', [2, 3], [1, 2, 3, 4, 5, 6]), floatInit('b', [2], [0.5, -0.5])],
  });
}

test('external-data tensors are read relative to the model file; from a buffer they fail clearly', () => {
  const m = tinyModel();
  const w = m.graph!.initializer![0]!;
  const bytes = Buffer.from(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
  fs.writeFileSync(path.join(tmp, 'weights.bin'), Buffer.concat([Buffer.alloc(16), bytes]));
  w.rawData = new Uint8Array();
  w.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  w.externalData = [{ key: 'location', value: 'weights.bin' }, { key: 'offset', value: '16' }, { key: 'length', value: '24' }];
  const file = path.join(tmp, 'ext.onnx');
  fs.writeFileSync(file, encode(m));
  const g = TfGraph.fromModel(loadModel(file));
  const y = tf.tidy(() => [...g.predict(tf.tensor([[1, 0, 0]])).dataSync()]);
  assert.deepEqual(y, [1.5, 3.5]);
  // writing back inlines the data, and the result loads anywhere
  const out = path.join(tmp, 'ext-exported.onnx');
  saveModel(g.exportModel(), out);
  fs.copyFileSync(out, path.join(os.tmpdir(), 'moved-ext.onnx'));
  assert.ok(loadModel(path.join(os.tmpdir(), 'moved-ext.onnx')));
  assert.throws(() => TfGraph.fromModel(loadModel(fs.readFileSync(file))), /external file 'weights.bin'.*loaded from a buffer/);
  g.dispose();
});

test('validation names the offending node or tensor', () => {
  const dangling = tinyModel();
  dangling.graph!.node!.push(node('Relu', ['nope'], ['z'], {}, 'act'));
  assert.throws(() => loadModel(encode(dangling)), /Relu node 'act' reads 'nope', which nothing defines/);
  const dup = tinyModel();
  dup.graph!.node!.push(node('Relu', ['x'], ['y'], {}, 'again'));
  assert.throws(() => loadModel(encode(dup)), /'y' is defined twice.*Relu node 'again'/);
  const cyc = buildModel({
    inputs: [{ name: 'x', shape: [1] }], outputs: [{ name: 'b', shape: [1] }],
    nodes: [node('Add', ['x', 'b'], ['a'], {}, 'first'), node('Relu', ['a'], ['b'], {}, 'second')],
  });
  assert.throws(() => loadModel(encode(cyc)), /cycle through .*(first|second)/);
  const noOpset = tinyModel();
  noOpset.opsetImport = [];
  assert.throws(() => loadModel(encode(noOpset)), /no opset_import/);
  assert.throws(() => loadModel(new Uint8Array([0x0a, 0xff, 0xff])), /not a valid ONNX model/);
  assert.throws(() => loadModel(path.join(tmp, 'missing.onnx')), /not found/);
});

test('export writes new weights into the same graph and keeps everything else byte for byte', () => {
  const file = path.join(tmp, 'keep.onnx');
  const m = tinyModel('model documentation');
  m.metadataProps = [{ key: 'author', value: 'someone' }];
  m.graph!.valueInfo = [{ name: 'y', docString: 'logits' }];
  m.graph!.node![0]!.docString = 'the only layer';
  fs.writeFileSync(file, encode(m));
  const model = loadModel(file);
  const g = TfGraph.fromModel(model);
  g.variables.get('W')!.assign(tf.fill([2, 3], 7));
  const out = g.exportModel();
  const a = onnx.ModelProto.toObject(model.proto, { longs: String, bytes: String }) as Record<string, unknown>;
  const b = onnx.ModelProto.toObject(out.proto, { longs: String, bytes: String }) as Record<string, unknown>;
  const strip = (o: Record<string, unknown>) => ({ ...o, graph: { ...(o.graph as object), initializer: undefined } });
  assert.deepEqual(strip(b), strip(a));
  const w = out.proto.graph!.initializer!.find((t) => t.name === 'W')!;
  assert.deepEqual([...decodeTensor(w).data as Float32Array], [7, 7, 7, 7, 7, 7]);
  // the original model object is untouched
  assert.deepEqual([...decodeTensor(model.proto.graph!.initializer![0]!).data as Float32Array], [1, 2, 3, 4, 5, 6]);
  assert.ok(encodeModel(out).length > 0);
  g.dispose();
});

test('saveModel never leaves a partial file under the final name', () => {
  const file = path.join(tmp, 'atomic.onnx');
  saveModel(loadModel(encode(tinyModel())), file);
  assert.ok(loadModel(file));
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), []);
});

test('models with float64 and float16 inputs convert and check against onnxruntime-node', async () => {
  const { checkModel } = await import('../src/verify/equivalence.js');
  for (const dtype of ['float64', 'float16'] as const) {
    const m = buildModel({
      inputs: [{ name: 'x', dtype, shape: ['batch', 3] }],
      outputs: [{ name: 'y', dtype, shape: ['batch', 2] }],
      nodes: [node('Gemm', ['x', 'W', 'b'], ['h'], { transB: 1 }, 'fc'), node('Relu', ['h'], ['y'], {}, 'act')],
      initializers: [
        encodeTensor('W', hostTensor(dtype, [2, 3], [0.5, -1, 2, 0.25, 1, -0.5])),
        encodeTensor('b', hostTensor(dtype, [2], [0.125, 0.5])),
      ],
    });
    const r = await checkModel(loadModel(encode(m)), { samples: 2 });
    assert.ok(r.ok, `${dtype}: ${JSON.stringify(r)}`);
  }
});
