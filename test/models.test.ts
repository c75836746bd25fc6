// Real torch.onnx.export files (models/, written by models/export_models.py): the tfjs graph must match
// PyTorch's own logits and onnxruntime-node, before and after export, and be trainable.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { tf } from '../src/tfjs/tf.js';
import { loadModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { checkModel } from '../src/verify/equivalence.js';

const ref = JSON.parse(fs.readFileSync('models/reference.json', 'utf8')) as {
  models: Record<string, { opset: number; input_shape: number[]; input: number[]; torch_output: number[] }>;
};
const files = Object.keys(ref.models);

test('models/ holds the exports the design asks for', () => {
  for (const f of ['small_cnn.onnx', 'small_cnn_nofold.onnx', 'vgg_bn.onnx', 'resnet_small.onnx', 'mlp.onnx', 'ops_zoo_opset11.onnx', 'ops_zoo_opset13.onnx', 'ops_zoo_opset17.onnx']) {
    assert.ok(files.includes(f) && fs.existsSync(`models/${f}`), f);
  }
  assert.deepEqual([...new Set(files.map((f) => loadModel(`models/${f}`).opset))].sort(), [11, 13, 17]);
});

for (const file of files) {
  test(`${file}: same logits as PyTorch, and check passes against onnxruntime-node`, async () => {
    const r = ref.models[file]!;
    const model = loadModel(`models/${file}`);
    const g = TfGraph.fromModel(model);
    const y = tf.tidy(() => g.predict(tf.tensor(r.input, r.input_shape)).dataSync());
    let d = 0;
    for (let i = 0; i < y.length; i++) d = Math.max(d, Math.abs(y[i]! - r.torch_output[i]!));
    assert.equal(y.length, r.torch_output.length);
    assert.ok(d < 1e-5, `max difference to PyTorch ${d}`);
    g.dispose();
    const c = await checkModel(model, { samples: 2 });
    assert.ok(c.ok, JSON.stringify(c));
    assert.equal(c.argmax_agreement, 1);
  });
}

test('constant folding removes the PyTorch shape chain, also when exported without folding', () => {
  for (const f of ['small_cnn.onnx', 'small_cnn_nofold.onnx']) {
    const g = TfGraph.fromModel(loadModel(`models/${f}`));
    assert.deepEqual(g.prepared.runNodes.map((n) => n.opType), ['Conv', 'Relu', 'Conv', 'Relu', 'Reshape', 'Gemm', 'Relu', 'Gemm'], f);
    // batch sizes other than the traced ones work (the folded [N, -1] is completed per batch)
    const y = tf.tidy(() => g.predict(tf.zeros([5, 1, 28, 28])).shape);
    assert.deepEqual(y, [5, 10]);
    g.dispose();
  }
});

test('trainable and prunable parameters are found, gradients reach all of them', () => {
  const g = TfGraph.fromModel(loadModel('models/resnet_small.onnx'));
  const prunable = g.prunableNames();
  assert.equal(prunable.length, 10); // 9 convs (incl. 2 shortcut convs) + fc
  assert.ok(prunable.every((n) => g.params.get(n)!.role === 'weight'));
  const bnStats = [...g.params.values()].filter((p) => p.role === 'running_mean' || p.role === 'running_var');
  assert.ok(bnStats.length > 0 && bnStats.every((p) => !p.trainable));
  const vars = g.trainableNames().map((n) => g.variables.get(n)!);
  const x = tf.randomUniform([4, 1, 28, 28]);
  const { grads } = tf.variableGrads(() => tf.sum(tf.square(g.forward(x, { training: true }).outputs[0]!)) as tf.Scalar, vars);
  for (const [name, gr] of Object.entries(grads)) assert.ok(tf.max(tf.abs(gr)).dataSync()[0]! > 0, `no gradient for ${name}`);
  g.dispose();
});

test('BatchNormalization in training mode normalises with batch statistics and updates running statistics', () => {
  const g = TfGraph.fromModel(loadModel('models/vgg_bn.onnx'));
  const x = tf.randomUniform([6, 3, 32, 32]);
  const { updates } = g.forward(x, { training: true });
  assert.ok(updates.size > 0);
  const [name, upd] = [...updates][0]!;
  const before = g.variables.get(name)!.dataSync().slice();
  g.applyUpdates(updates);
  const after = g.variables.get(name)!.dataSync();
  assert.deepEqual([...after], [...upd.dataSync()]);
  assert.notDeepEqual([...after], [...before]);
  g.dispose();
});
