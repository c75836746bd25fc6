// Real architectures as PyTorch exports them: torchvision classifiers at CIFAR size (random weights,
// exported by models/export_torchvision.py when Debian's python3-torch and python3-torchvision are
// installed) pass `check` against onnxruntime and train one short epoch (PGD, so input and parameter
// gradients both run) on the compiled engine, with no per-op fallback.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const BIN = path.resolve('bin/onnx-hydra.js');
const MODELS = ['resnet18', 'mobilenet_v2', 'mobilenet_v3_small', 'efficientnet_b0', 'shufflenet_v2_x0_5', 'densenet121', 'vit_b_16', 'swin_t'];
const torch = spawnSync('/usr/bin/python3', ['-c', 'import torch, torchvision'], { encoding: 'utf8' }).status === 0;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-tv-'));

test('torchvision exports: check passes and one PGD training epoch runs on the compiled engine without fallback', { skip: !torch && 'needs python3-torch python3-torchvision (apt-get install)' }, () => {
  const exp = spawnSync('/usr/bin/python3', ['models/export_torchvision.py', tmp, ...MODELS], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(exp.status, 0, exp.stderr.slice(-2000));
  // a handful of CIFAR-shaped images in [0,1] with labels, as .npy (the data spec every command reads)
  const npy = (file: string, descr: string, shape: number[], body: Buffer): void => {
    let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
    header += ' '.repeat(64 - ((10 + header.length + 1) % 64)) + '\n';
    const pre = Buffer.alloc(10);
    pre.write('\x93NUMPY', 0, 'latin1');
    pre[6] = 1;
    pre.writeUInt16LE(header.length, 8);
    fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
  };
  const n = 16;
  const x = new Float32Array(n * 3 * 32 * 32).map((_, i) => (Math.sin(i * 12.9898) * 43758.5453) % 1 * 0.5 + 0.5);
  npy(path.join(tmp, 'x.npy'), '<f4', [n, 3, 32, 32], Buffer.from(x.buffer));
  npy(path.join(tmp, 'y.npy'), '<i8', [n], Buffer.from(BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 10)).buffer));
  const data = `npy:${tmp}/x.npy,${tmp}/y.npy;${tmp}/x.npy,${tmp}/y.npy`;
  const failures: string[] = [];
  for (const m of MODELS) {
    const file = path.join(tmp, `${m}.onnx`);
    const chk = spawnSync(process.execPath, [BIN, 'check', file, '--samples', '1', '--json'], { encoding: 'utf8', timeout: 600_000 });
    if (chk.status !== 0) { failures.push(`${m}: check exit ${chk.status}: ${chk.stderr.trim().split('\n').pop()}`); continue; }
    assert.equal(JSON.parse(chk.stdout).ok, true, m);
    const tr = spawnSync(process.execPath, [BIN, 'train', file, '--data', data, '--objective', 'pgd', '--steps', '1', '--epochs', '1', '--batch-size', '8', '--lr', '0.001',
      '--train-limit', '16', '--eval-limit', '0', '--eval-steps', '0', '--final-eval-limit', '8', '--out', path.join(tmp, `${m}.pgd.onnx`), '--json'], { encoding: 'utf8', timeout: 900_000 });
    if (tr.status !== 0) { failures.push(`${m}: train exit ${tr.status}: ${tr.stderr.trim().split('\n').pop()}`); continue; }
    const rep = JSON.parse(tr.stdout);
    if (/per-op|cpu$/.test(rep.engine) || /cannot differentiate/.test(tr.stderr)) failures.push(`${m}: fell back: ${rep.engine}`);
    fs.rmSync(path.join(tmp, `${m}.pgd.onnx`), { force: true });
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual(failures, []);
});
