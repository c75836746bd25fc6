// The official ONNX backend node tests (Debian: libonnx-testdata) through the tfjs graph.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findTestdata, listBackendTests, runBackendTest } from './helpers/backend-tests.js';

/** Failures of supported ops we know of, each with its reason (none at present). */
const KNOWN_FAILURES: Record<string, string> = {};

test('ONNX backend node tests: every test of a supported op passes', () => {
  const root = findTestdata();
  assert.ok(root, 'ONNX backend test data not found: apt-get install libonnx-testdata (or set ONNX_TESTDATA)');
  const counts = { pass: 0, fail: 0, skip: 0 };
  const failures: string[] = [];
  for (const dir of listBackendTests(root)) {
    const name = dir.split('/').pop()!;
    const r = runBackendTest(dir);
    counts[r.status]++;
    if (r.status === 'fail' && !(name in KNOWN_FAILURES)) failures.push(`${name}: ${r.reason}`);
  }
  console.log(`# ONNX backend node tests: ${counts.pass} pass, ${counts.fail} fail, ${counts.skip} skip`);
  assert.deepEqual(failures, []);
  assert.ok(counts.pass >= 500, `only ${counts.pass} tests passed`);
});
