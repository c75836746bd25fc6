// Dataset formats (CIFAR binary batches, .npy in NCHW/NHW/NHWC) written here byte by byte from their
// published layouts, and --mean/--std normalisation put in front of a model.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadData } from '../src/data/index.js';
import { loadCifarBatches } from '../src/data/formats.js';
import { withInputNormalization } from '../src/onnx/normalize-input.js';
import { loadModel, encodeModel } from '../src/onnx/model.js';
import { createSession, runSession } from '../src/runtime/ort.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hydra-data-'));

/** NPY v1.0: magic, version, little-endian header length, a Python dict literal padded to 64 bytes, data. */
function npy(file: string, descr: string, shape: number[], data: Uint8Array): void {
  let h = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  while ((10 + h.length + 1) % 64) h += ' ';
  h += '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(h.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(h, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

test('.npy pairs: uint8 NHWC is transposed to NCHW and scaled, float NCHW kept, int64 labels', () => {
  // 2 images 2×3 with 3 channels, channels last: value = 100·c + 10·h + w (+ 1 for the second image)
  const n = 2, H = 2, W = 3, C = 3;
  const x = new Uint8Array(n * H * W * C);
  for (let e = 0; e < n; e++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) for (let c = 0; c < C; c++) x[((e * H + h) * W + w) * C + c] = 100 * c + 10 * h + w + e;
  npy(path.join(tmp, 'x.npy'), '|u1', [n, H, W, C], x);
  npy(path.join(tmp, 'y.npy'), '<i8', [n], new Uint8Array(BigInt64Array.from([3n, 9n]).buffer));
  const d = loadData(`npy:${tmp}/x.npy,${tmp}/y.npy`).test;
  assert.deepEqual(d.shape, [3, 2, 3]);
  assert.deepEqual([...d.y], [3, 9]);
  // image 1, channel 2, row 1, column 2 → 100·2 + 10 + 2 + 1 = 213
  assert.ok(Math.abs(d.x[((1 * C + 2) * H + 1) * W + 2]! - 213 / 255) < 1e-7);
  const f = Float32Array.from({ length: 2 * 1 * 4 * 4 }, (_, i) => i / 32);
  npy(path.join(tmp, 'xf.npy'), '<f4', [2, 1, 4, 4], new Uint8Array(f.buffer));
  const df = loadData(`npy:${tmp}/xf.npy,${tmp}/y.npy`).test;
  assert.deepEqual(df.shape, [1, 4, 4]);
  assert.equal(df.x[5], 5 / 32);
  npy(path.join(tmp, 'y3.npy'), '<i8', [3], new Uint8Array(BigInt64Array.from([1n, 2n, 3n]).buffer));
  assert.throws(() => loadData(`npy:${tmp}/xf.npy,${tmp}/y3.npy`), /has 2 images, .* has 3 labels/);
});

test('CIFAR binary batches: label byte(s) then R, G, B planes; CIFAR-100 uses the fine label', () => {
  const rec = (labels: number[], px: (j: number) => number) => Uint8Array.from([...labels, ...Array.from({ length: 3072 }, (_, j) => px(j))]);
  fs.writeFileSync(path.join(tmp, 'c10.bin'), Buffer.concat([rec([7], (j) => j % 256), rec([2], () => 255)]));
  const d = loadCifarBatches([path.join(tmp, 'c10.bin')], 'c10', 1);
  assert.deepEqual(d.shape, [3, 32, 32]);
  assert.deepEqual([...d.y], [7, 2]);
  assert.equal(d.classes, 10);
  assert.ok(Math.abs(d.x[1024 + 5]! - ((1024 + 5) % 256) / 255) < 1e-7); // green plane, pixel 5
  assert.equal(d.x[3072 + 17], 1);
  fs.writeFileSync(path.join(tmp, 'c100.bin'), rec([3, 88], () => 0));
  const e = loadCifarBatches([path.join(tmp, 'c100.bin')], 'c100', 2);
  assert.deepEqual([...e.y], [88]);
  assert.equal(e.classes, 100);
  fs.writeFileSync(path.join(tmp, 'bad.bin'), new Uint8Array(3000));
  assert.throws(() => loadCifarBatches([path.join(tmp, 'bad.bin')], 'bad', 1), /not a CIFAR-10 binary batch/);
});

test('--mean/--std: the normalised model on pixels equals the original model on (x − mean)/std', async () => {
  const m = loadModel('models/vgg_bn.onnx');
  const mean = [0.49, 0.48, 0.45];
  const std = [0.25, 0.24, 0.26];
  const norm = withInputNormalization(m, mean, std);
  const x = Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => (i % 97) / 97);
  const xn = x.map((v, i) => (v - mean[Math.floor(i / 1024) % 3]!) / std[Math.floor(i / 1024) % 3]!);
  const [a] = await runSession(await createSession(encodeModel(norm)), [{ data: x, shape: [2, 3, 32, 32] }]);
  const [b] = await runSession(await createSession(m), [{ data: xn, shape: [2, 3, 32, 32] }]);
  let d = 0;
  for (let i = 0; i < a!.data.length; i++) d = Math.max(d, Math.abs(a!.data[i]! - b!.data[i]!));
  assert.ok(d < 1e-4, `max difference ${d}`);
  assert.throws(() => withInputNormalization(m, [0.5, 0.5], undefined), /--mean has 2 values, the model input has 3 channels/);
  assert.throws(() => withInputNormalization(m, undefined, [0, 1, 1]), /--std values must be > 0/);
  assert.equal(withInputNormalization(m, undefined, undefined), m);
});

test('data download: streams from a (local) server into place, unpacks tarballs, prints the --data spec; offline is a one-line error', async () => {
  const http = await import('node:http');
  const tar = await import('tar');
  const { downloadDataset } = await import('../src/data/download.js');
  // a CIFAR-10 tarball with six tiny batches
  const src = path.join(tmp, 'src', 'cifar-10-batches-bin');
  fs.mkdirSync(src, { recursive: true });
  const rec = Uint8Array.from({ length: 3073 }, (_, j) => (j === 0 ? 4 : j % 256));
  for (const f of ['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch']) fs.writeFileSync(path.join(src, `${f}.bin`), rec);
  const served = path.join(tmp, 'served');
  fs.mkdirSync(served);
  await tar.c({ gzip: true, file: path.join(served, 'cifar-10-binary.tar.gz'), cwd: path.join(tmp, 'src') }, ['cifar-10-batches-bin']);
  for (const f of fs.readdirSync('data/fashion-mnist').filter((f) => f.endsWith('.gz'))) fs.copyFileSync(path.join('data/fashion-mnist', f), path.join(served, f));
  const server = http.createServer((req, res) => {
    const f = path.join(served, path.basename(req.url ?? ''));
    if (!fs.existsSync(f)) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': fs.statSync(f).size });
    fs.createReadStream(f).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  try {
    const fm = await downloadDataset('fashion-mnist', path.join(tmp, 'fm'), { baseUrl: base, quiet: true });
    assert.equal(loadData(fm.spec).test.length, 10000);
    const c = await downloadDataset('cifar10', path.join(tmp, 'c10'), { baseUrl: base, quiet: true });
    const d = loadData(c.spec);
    assert.equal(d.train.length, 5);
    assert.deepEqual([...d.test.y], [4]);
    const again = await downloadDataset('fashion-mnist', path.join(tmp, 'fm'), { baseUrl: base, quiet: true });
    assert.ok(again.files.every((f) => f.reused));
    await assert.rejects(downloadDataset('cifar100', path.join(tmp, 'mn'), { baseUrl: base, quiet: true }), /cannot download .*cifar-100-binary.tar.gz: HTTP 404/);
    assert.ok(!fs.readdirSync(path.join(tmp, 'mn')).length, 'no partial file left');
  } finally {
    server.close();
  }
});
