// Prints pass/fail/skip of every ONNX backend node test (used to write the README's table).
import { findTestdata, listBackendTests, runBackendTest } from './helpers/backend-tests.js';
const root = findTestdata();
if (!root) { console.error('libonnx-testdata not installed'); process.exit(2); }
const counts = { pass: 0, fail: 0, skip: 0 };
const pat = process.argv.slice(2).find((a) => !a.startsWith('--'));
const filter = pat ? new RegExp(pat) : undefined;
for (const dir of listBackendTests(root)) {
  if (filter && !filter.test(dir)) continue;
  const r = runBackendTest(dir);
  counts[r.status]++;
  if (r.status !== 'pass' && (r.status === 'fail' || process.argv.includes('--skips'))) console.log(r.status.toUpperCase(), dir.split('/').pop(), 'reason' in r ? r.reason : '');
}
console.log(JSON.stringify(counts));
