// Small utilities the engine leans on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alignedCopies } from '../src/util/aligned.js';

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
