// Small utilities the engine leans on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alignedCopies } from '../src/util/aligned.js';
import { threadsFor } from '../src/util/threads.js';
import { UserError } from '../src/util/errors.js';

test('alignedCopies: equal values at 64-byte offsets of one page-aligned memory, reused once released', () => {
  const arrays = [Float32Array.of(1, 2, 3), Float32Array.from({ length: 1000 }, (_, i) => i / 7), new Float32Array(17).fill(-2)];
  const { copies, release } = alignedCopies(arrays);
  assert.equal(copies.length, 3);
  copies.forEach((c, i) => {
    assert.notEqual(c, arrays[i]);
    assert.deepEqual(Array.from(c), Array.from(arrays[i]!));
    // a WebAssembly memory starts on a page: an offset that is a multiple of 64 is a 64-byte aligned address
    assert.ok(c.buffer !== arrays[i]!.buffer && c.byteOffset % 64 === 0, `copy ${i} at offset ${c.byteOffset}`);
    assert.equal(c.buffer, copies[0]!.buffer);
  });
  release();
  const again = alignedCopies([Float32Array.of(5)]);
  assert.equal(again.copies[0]!.buffer, copies[0]!.buffer, 'the released memory is taken again');
  assert.deepEqual(Array.from(again.copies[0]!), [5]);
  again.release();
  assert.deepEqual(alignedCopies([]).copies, []);
});

test('onnxruntime thread count: HYDRA_THREADS wins; else the usable CPUs, hyperthreads counted once', () => {
  // a 2-vCPU VM (no hyperthreads): both; onnxruntime's own default ran one thread on such a machine
  assert.equal(threadsFor(undefined, 2, 2, 2), 2);
  // 8 logical CPUs on 4 cores: one thread per core
  assert.equal(threadsFor(undefined, 8, 8, 4), 4);
  // an affinity of 4 of those 8 CPUs: about its share of the cores
  assert.equal(threadsFor(undefined, 4, 8, 4), 2);
  assert.equal(threadsFor(undefined, 1, 8, 4), 1);
  // no topology to read: the usable CPUs
  assert.equal(threadsFor(undefined, 6, 6, undefined), 6);
  assert.equal(threadsFor('3', 8, 8, 4), 3);
  assert.equal(threadsFor('', 2, 2, 2), 2);
  for (const bad of ['0', '-1', '1.5', 'two']) assert.throws(() => threadsFor(bad, 2, 2, 2), (e: Error) => e instanceof UserError && e.message.includes('HYDRA_THREADS'), bad);
});
