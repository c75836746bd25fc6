// `npm run bench -- --isa avx2`: the copy of onnxruntime's library that sees no AVX-512 state. Checked against
// onnxruntime itself: loaded ahead of the package's copy, it runs NCHWc blocks of 8 channels (AVX2 kernels)
// and computes what the package's copy computes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { avx2Library } from '../bench/isa.js';

const objdump = spawnSync('objdump', ['--version']).status === 0;
const SKIP = process.platform !== 'linux' || process.arch !== 'x64' ? 'linux x64 only' : !objdump ? 'no objdump (binutils)' : false;

// prints the NCHWc block onnxruntime runs and models/small_cnn.onnx's logits on a fixed input
const PROBE = `
const { nchwcBlockSize } = await import(process.cwd() + '/dist/src/engine/ort-sync.js');
const ort = (await import('onnxruntime-node')).default;
const s = await ort.InferenceSession.create('models/small_cnn.onnx', { intraOpNumThreads: 1 });
const x = Float32Array.from({ length: 8 * 784 }, (_, i) => (i * 7919 % 1000) / 1000);
const out = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', x, [8, 1, 28, 28]) });
console.log(JSON.stringify({ block: nchwcBlockSize(), logits: Array.from(out[s.outputNames[0]].data) }));
`;

function probe(env: NodeJS.ProcessEnv): { block: number; logits: number[] } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', PROBE], { encoding: 'utf8', env, timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { block: number; logits: number[] };
}

test('--isa avx2: onnxruntime loaded from the patched copy runs 8-channel blocks and computes the same logits', { skip: SKIP }, () => {
  const dir = avx2Library();
  const native = probe(process.env);
  const limited = probe({ ...process.env, LD_LIBRARY_PATH: dir });
  assert.equal(limited.block, 8, 'AVX2 kernels use blocks of 8 channels');
  assert.ok(native.block === 8 || native.block === 16, `native block ${native.block}`);
  assert.equal(limited.logits.length, 80);
  limited.logits.forEach((v, i) => assert.ok(Math.abs(v - native.logits[i]!) < 1e-4, `logit ${i}: ${v} vs ${native.logits[i]}`));
});
