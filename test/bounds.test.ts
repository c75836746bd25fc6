// Interval bounds (IBP) of real exports: sound (every sampled point of the ε-ball lands inside), equal on the
// compiled onnxruntime engine and on per-op tfjs, tight at ε = 0, and differentiable.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tf } from '../src/tfjs/tf.js';
import { selectEngine } from '../src/engine/select.js';
import { loadModel } from '../src/onnx/model.js';
import { TfGraph } from '../src/graph/graph.js';
import { Net } from '../src/engine/net.js';
import { makeRng } from '../src/util/rng.js';

const engine = selectEngine('ort');
const cpuEngine = { ...engine, kind: 'cpu' as const, description: 'cpu' };

// gradients against per-op tfjs on the small nets (the pure-JS reference takes minutes on the deeper ones)
const GRAD_CHECK = new Set(['mlp.onnx', 'small_cnn.onnx']);

for (const file of ['mlp.onnx', 'small_cnn.onnx', 'vgg_bn.onnx', 'resnet_small.onnx']) {
  test(`${file}: IBP bounds are sound, engine-independent, exact at ε = 0`, () => {
    const g = TfGraph.fromModel(loadModel(`models/${file}`));
    const net = new Net(g, engine);
    const ref = new Net(g, cpuEngine);
    const n = 3;
    const per = net.inputShape.reduce((a, b) => a * b, 1);
    const rng = makeRng('bounds');
    const x = Float32Array.from({ length: n * per }, () => rng());
    const eps = 0.01;
    tf.tidy(() => {
      const xt = tf.tensor(x, [n, ...net.inputShape]);
      const b = net.bounds(xt, eps);
      const l = b.lower.dataSync();
      const u = b.upper.dataSync();
      const r = ref.bounds(xt, eps);
      const lr = r.lower.dataSync();
      const ur = r.upper.dataSync();
      let d = 0;
      for (let i = 0; i < l.length; i++) d = Math.max(d, Math.abs(l[i]! - lr[i]!), Math.abs(u[i]! - ur[i]!));
      assert.ok(d < 1e-3 * (1 + Math.max(...Array.from(u, Math.abs))), `ort vs tfjs bounds differ by ${d}`);
      const f = net.frozen();
      for (let t = 0; t < 20; t++) {
        const xs = x.map((v) => Math.min(1, Math.max(0, v + (t < 2 ? (t ? eps : -eps) : (2 * rng() - 1) * eps))));
        const z = f.logits(xs, n);
        for (let i = 0; i < z.length; i++) {
          assert.ok(z[i]! >= l[i]! - 1e-4 && z[i]! <= u[i]! + 1e-4, `sample ${t}: logit ${z[i]} outside [${l[i]}, ${u[i]}]`);
        }
      }
      const z0 = f.logits(x, n);
      const b0 = net.bounds(xt, 0);
      const l0 = b0.lower.dataSync();
      const u0 = b0.upper.dataSync();
      for (let i = 0; i < z0.length; i++) assert.ok(Math.abs(l0[i]! - z0[i]!) < 1e-4 && Math.abs(u0[i]! - z0[i]!) < 1e-4);
      // the bound gap has gradients for the weights, and they agree between the engines
      if (!GRAD_CHECK.has(file)) return;
      const vars = g.trainableNames().map((k) => g.variables.get(k)!);
      const gap = (nt: Net) => tf.variableGrads(() => tf.sum(tf.sub(nt.bounds(xt, eps).upper, nt.bounds(xt, eps).lower)) as tf.Scalar, vars);
      const ga = gap(net);
      const gb = gap(ref);
      for (const k of Object.keys(gb.grads)) {
        const a = ga.grads[k]!.dataSync();
        const bb = gb.grads[k]!.dataSync();
        let num = 0;
        let den = 0;
        for (let i = 0; i < a.length; i++) {
          num = Math.max(num, Math.abs(a[i]! - bb[i]!));
          den = Math.max(den, Math.abs(bb[i]!));
        }
        assert.ok(num <= 1e-3 * (1 + den), `${k}: gradient differs by ${num} (scale ${den})`);
      }
      assert.ok(Object.values(ga.grads).some((t) => tf.any(tf.notEqual(t, 0)).dataSync()[0]), 'all gradients are zero');
    });
    net.dispose();
    ref.dispose();
    g.dispose();
  });
}

for (const file of ['mlp.onnx', 'small_cnn.onnx', 'resnet_small.onnx']) {
  test(`${file}: CROWN-IBP margin bounds are sound, tighter than IBP, engine-independent, differentiable`, () => {
    const g = TfGraph.fromModel(loadModel(`models/${file}`));
    const net = new Net(g, engine);
    const ref = new Net(g, cpuEngine);
    const n = GRAD_CHECK.has(file) ? 2 : 1;
    const k = net.classes;
    const per = net.inputShape.reduce((a, b) => a * b, 1);
    const rng = makeRng('crown');
    const x = Float32Array.from({ length: n * per }, () => rng());
    const labels = Int32Array.from([3, 7]).slice(0, n);
    const eps = 0.005;
    tf.tidy(() => {
      const xt = tf.tensor(x, [n, ...net.inputShape]);
      const b = net.bounds(xt, eps, { labels });
      const cm = b.crownMargins!.dataSync();
      const l = b.lower.dataSync();
      const u = b.upper.dataSync();
      const rm = ref.bounds(xt, eps, { labels }).crownMargins!.dataSync();
      let d = 0;
      let scale = 0;
      for (let i = 0; i < cm.length; i++) {
        d = Math.max(d, Math.abs(cm[i]! - rm[i]!));
        scale = Math.max(scale, Math.abs(rm[i]!));
      }
      assert.ok(d <= 1e-4 * (1 + scale), `ort vs tfjs CROWN bounds differ by ${d}`);
      const f = net.frozen();
      for (let t = 0; t < 20; t++) {
        const xs = x.map((v) => Math.min(1, Math.max(0, v + (2 * rng() - 1) * eps)));
        const z = f.logits(xs, n);
        for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) {
          const m = z[i * k + labels[i]!]! - z[i * k + j]!;
          assert.ok(m >= cm[i * k + j]! - 1e-4 * (1 + Math.abs(m)), `margin ${m} below its CROWN bound ${cm[i * k + j]}`);
        }
      }
      let ibp = 0;
      let crown = 0;
      for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) if (j !== labels[i]) {
        ibp += l[i * k + labels[i]!]! - u[i * k + j]!;
        crown += cm[i * k + j]!;
      }
      assert.ok(crown > ibp, `CROWN (${crown}) should be tighter than IBP (${ibp}) here`);
      if (!GRAD_CHECK.has(file)) return;
      const vars = g.trainableNames().map((name) => g.variables.get(name)!);
      const grad = (nt: Net) => tf.variableGrads(() => tf.sum(nt.bounds(xt, eps, { labels }).crownMargins!) as tf.Scalar, vars).grads;
      const ga = grad(net);
      const gb = grad(ref);
      for (const name of Object.keys(gb)) {
        const a = ga[name]!.dataSync();
        const bb = gb[name]!.dataSync();
        let num = 0;
        let den = 0;
        for (let i = 0; i < a.length; i++) {
          num = Math.max(num, Math.abs(a[i]! - bb[i]!));
          den = Math.max(den, Math.abs(bb[i]!));
        }
        assert.ok(num <= 1e-3 * (1 + den), `${name}: CROWN gradient differs by ${num} (scale ${den})`);
      }
    });
    assert.equal(net.boundsFallback, undefined, 'bound graphs compiled');
    net.dispose();
    ref.dispose();
    g.dispose();
  });
}

test('CROWN-IBP names the layer it cannot relax', () => {
  const g = TfGraph.fromModel(loadModel('models/vgg_bn.onnx'));
  const net = new Net(g, engine);
  assert.throws(() => net.bounds(tf.zeros([1, ...net.inputShape]), 0.01, { labels: Int32Array.of(0) }), /CROWN-IBP: no linear relaxation for MaxPool at MaxPool node '.+'; use --objective ibp/);
  net.dispose();
  g.dispose();
});
