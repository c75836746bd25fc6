// What both bench scripts (index.ts: against PyTorch; step.ts: step by step) run: a bench model's ONNX file
// and one training step on it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../src/tfjs/tf.js';
import type { Net } from '../src/engine/net.js';
import { makeRng } from '../src/util/rng.js';
import type { Objective } from '../src/train/objectives.js';
import type { Optimizer } from '../src/train/optim.js';
import { packageRoot } from '../src/data/dataset.js';

/** One training step of `objective` on the batch (xd, yd) of `shape`, with learning rate 0.01. */
export function trainStep(net: Net, objective: Objective, opt: Optimizer, xd: Float32Array, yd: Int32Array, shape: number[], step: number): void {
  const vars = new Map(net.graph.trainableNames().map((n) => [n, net.graph.variables.get(n)!]));
  const names = new Map([...vars].map(([k, v]) => [v.name, k]));
  tf.tidy(() => {
    const batch = { x: tf.tensor(xd, shape), y: tf.tensor1d(yd, 'int32'), xd, yd, n: yd.length };
    const lossFn = objective.prepare({ net, rng: makeRng(step), progress: 0.5, seed: step }, batch);
    let updates = new Map<string, tf.Tensor>();
    const { grads } = tf.variableGrads(() => {
      const r = lossFn();
      updates = new Map([...r.updates].map(([k, v]) => [k, tf.keep(v)]));
      return r.loss;
    }, [...vars.values()]);
    const named: Record<string, tf.Tensor> = {};
    for (const [k, g] of Object.entries(grads)) named[names.get(k)!] = g;
    opt.apply(vars, named, 0.01);
    net.graph.applyUpdates(updates);
    for (const u of updates.values()) u.dispose();
  });
}

/** The ONNX file of a bench model: models/<name>.onnx, or a torchvision classifier exported once into .cache/. */
export function modelFile(model: string): string {
  const local = path.join(packageRoot(), 'models', `${model}.onnx`);
  if (fs.existsSync(local)) return local;
  const dir = path.join(packageRoot(), '.cache', 'torchvision');
  const file = path.join(dir, `${model}.onnx`);
  if (!fs.existsSync(file)) {
    const r = spawnSync('/usr/bin/python3', [path.join(packageRoot(), 'models', 'export_torchvision.py'), dir, model], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`no models/${model}.onnx, and exporting it with PyTorch failed: ${r.stderr.trim().split('\n').pop()}`);
  }
  return file;
}
