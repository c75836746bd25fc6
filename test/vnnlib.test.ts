// VNN-LIB: the parser (boxes, disjunctions, comments, one-line errors naming line and token), and sat/unsat on
// properties whose answers are known by construction (test/helpers/vnnlib-fixtures.ts), an instances.csv
// run, and the command line.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { selectEngine } from '../src/engine/select.js';
import { UserError } from '../src/util/errors.js';
import { createSession, runSession } from '../src/runtime/ort.js';
import { makeRng } from '../src/util/rng.js';
import { bindProperty, parseVnnlib, type VnnProperty } from '../src/verify/vnnlib/parse.js';
import { satisfiesAll, inBox, roundFloat32 } from '../src/verify/vnnlib/boxes.js';
import { VnnModel } from '../src/verify/vnnlib/model.js';
import { checkProperty, type VnnlibReport } from '../src/verify/vnnlib/check.js';
import { resultFileText } from '../src/verify/vnnlib/results.js';
import { readInstances, resultFileName, runInstances } from '../src/verify/vnnlib/instances.js';
import { SOFTMAX_UNPROVABLE, writeVnnlibFixtures } from './helpers/vnnlib-fixtures.js';

selectEngine('ort');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-hydra-vnnlib-'));
const fx = writeVnnlibFixtures(dir);
const CLI = path.resolve('bin/onnx-hydra.js');

const parseError = (text: string, pattern: RegExp): void => {
  assert.throws(() => bindProperty(parseVnnlib(text, 'p.vnnlib'), [1, 2], [1, 2]), (e: Error) => {
    assert.ok(e instanceof UserError, `not a UserError: ${e.message}`);
    assert.ok(!e.message.includes('\n'), `not one line: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
};

const HEAD = '(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n';
const BOX = '(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n';

test('parser: input box, linear output constraints, comments', () => {
  const text = `; a comment line
(declare-const X_0 Real) ; a trailing comment
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.5))
(assert (>= X_0 -0.5))
(assert (and (<= X_1 1e-1) (>= X_1 (- 0.25))))
(assert (<= X_1 0.3)) ; looser than 1e-1: the box keeps 0.1
(assert (<= Y_0 Y_1))
(assert (>= (+ Y_2 (* 2 Y_0)) 3))
(assert (< (- Y_1 Y_2) (/ 1 4)))
`;
  const p = bindProperty(parseVnnlib(text, 'p.vnnlib'), [1, 2], [1, 3]);
  assert.equal(p.inputs, 2);
  assert.equal(p.outputs, 3);
  assert.equal(p.regions.length, 1);
  const r = p.regions[0]!;
  assert.deepEqual(Array.from(r.lower), [-0.5, -0.25]);
  assert.deepEqual(Array.from(r.upper), [0.5, 0.1]);
  assert.equal(r.constraints.length, 3);
  // Y_0 − Y_1 ≤ 0
  assert.deepEqual([Array.from(r.constraints[0]!.coef), r.constraints[0]!.rhs, r.constraints[0]!.strict], [[1, -1, 0], 0, false]);
  // 3 − Y_2 − 2·Y_0 ≤ 0, i.e. −2·Y_0 − Y_2 ≤ −3
  assert.deepEqual([Array.from(r.constraints[1]!.coef), r.constraints[1]!.rhs], [[-2, 0, -1], -3]);
  // Y_1 − Y_2 < 1/4
  assert.deepEqual([Array.from(r.constraints[2]!.coef), r.constraints[2]!.rhs, r.constraints[2]!.strict], [[0, 1, -1], 0.25, true]);
  assert.equal(r.constraints[1]!.line, 12);
});

test('parser: disjunctions in several asserts multiply out; false disjuncts and empty boxes drop', () => {
  const text = `${HEAD}(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))
(assert (or (and (<= Y_0 0) (<= Y_1 0)) (and (>= Y_0 1))))
(assert (or (<= X_0 0) (>= X_0 0.5) (and (>= X_0 2) (<= Y_1 5)) (and (<= 1 0) (<= Y_0 7))))
`;
  const p = bindProperty(parseVnnlib(text, 'p.vnnlib'), [1, 2], [1, 2]);
  // 2 output disjuncts × 2 feasible input disjuncts (X_0 ≥ 2 leaves an empty box, 1 ≤ 0 is false)
  assert.equal(p.regions.length, 4);
  const boxes = p.regions.map((r) => `${r.lower[0]}..${r.upper[0]}`).sort();
  assert.deepEqual(boxes, ['-1..0', '-1..0', '0.5..1', '0.5..1']);
  assert.deepEqual(p.regions.map((r) => r.constraints.length).sort(), [1, 1, 2, 2]);
  // the conjunction of everything: an unsafe region with no input at all
  const none = bindProperty(parseVnnlib(`${HEAD}${BOX}(assert (<= X_0 -1))\n(assert (<= Y_0 0))\n`, 'p.vnnlib'), [1, 2], [1, 2]);
  assert.equal(none.regions.length, 0);
});

test('parser: multi-index variable names index the tensors row-major', () => {
  const decl = ['X_0_0_0_0', 'X_0_0_0_1', 'X_0_0_0_2', 'X_0_0_0_3', 'X_0_0_0_4'].map((v) => `(declare-const ${v} Real)\n(assert (>= ${v} 0))\n(assert (<= ${v} 1))`).join('\n');
  const text = `${decl}\n(declare-const Y_0_0 Real)\n(declare-const Y_0_3 Real)\n(assert (<= X_0_0_0_3 0.25))\n(assert (<= Y_0_3 Y_0_0))\n`;
  const p = bindProperty(parseVnnlib(text, 'acas.vnnlib'), [1, 1, 1, 5], [1, 5]);
  assert.deepEqual(Array.from(p.regions[0]!.upper), [1, 1, 1, 0.25, 1]);
  assert.deepEqual(Array.from(p.regions[0]!.constraints[0]!.coef), [-1, 0, 0, 1, 0]);
});

test('parser: malformed files give one-line errors naming the line and the token', () => {
  parseError(`${HEAD}${BOX}(assert (<= Y_0 0.5)))\n`, /^p\.vnnlib:9:22: unexpected '\)'/);
  parseError(`${HEAD}${BOX}(assert (<= Z_0 0.5))\n`, /^p\.vnnlib:9:13: expected a number or a declared variable, got 'Z_0'/);
  parseError(`${HEAD}${BOX}(assert (<= Y_7 0.5))\n`, /^p\.vnnlib:9:13: undeclared variable 'Y_7'/);
  parseError(`${HEAD}${BOX}\n(assert (and (<= Y_0 0.5)\n`, /^p\.vnnlib:10:9: '\(' is never closed/);
  parseError(`${HEAD}${BOX}(assert (<= X_0 Y_0))\n`, /^p\.vnnlib:9:13: a constraint mixing inputs \(X\) and outputs \(Y\)/);
  parseError(`${HEAD}${BOX}(assert (<= (* Y_0 Y_1) 1))\n`, /^p\.vnnlib:9:20: nonlinear term/);
  parseError(`${HEAD}${BOX}(assert (not (<= Y_0 1)))\n`, /^p\.vnnlib:9:10: 'not' is not supported/);
  parseError(`${HEAD}${BOX}(assert (<= Y_0 0.5.1))\n`, /^p\.vnnlib:9:17: expected a number or a declared variable, got '0\.5\.1'/);
  parseError('(declare-const X_0 Int)\n', /^p\.vnnlib:1:20: sort 'Int' is not supported/);
  parseError('(declare-const input Real)\n', /^p\.vnnlib:1:16: variables must be named X_<i> \(inputs\) or Y_<j> \(outputs\), got 'input'/);
  parseError('(declare-const X_0 Real)\n(declare-const X_0 Real)\n', /^p\.vnnlib:2:16: 'X_0' is declared twice/);
  parseError('(define-fun f () Real 1)\n', /^p\.vnnlib:1:2: unknown command 'define-fun'/);
  parseError('assert\n', /^p\.vnnlib:1:1: unexpected 'assert' outside parentheses/);
  // semantic errors name the variable
  parseError(`${HEAD}(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= Y_0 1))\n`, /^p\.vnnlib: input X_1 has no upper bound/);
  parseError(`${HEAD}(declare-const Y_2 Real)\n${BOX}`, /^p\.vnnlib: Y_2 is out of range: the model's output has 2 elements/);
});

test('result file: VNN-COMP format', () => {
  assert.equal(resultFileText({ result: 'unsat' }), 'unsat\n');
  assert.equal(resultFileText({ result: 'timeout' }), 'timeout\n');
  assert.equal(resultFileText({ result: 'sat', counterexample: { x: [0.5, -0.25], y: [1.5] } }), 'sat\n((X_0 0.5)\n (X_1 -0.25)\n (Y_0 1.5))\n');
  assert.equal(roundFloat32(0.1, true) <= 0.1 && roundFloat32(0.1, false) >= 0.1, true);
  assert.equal(roundFloat32(0.5, true), 0.5);
});

/** onnxruntime's outputs on the file at x, computed here independently of the checker. */
async function ortOutputs(file: string, shape: number[], x: number[]): Promise<Float32Array> {
  const s = await createSession(file);
  try {
    return (await runSession(s, [{ data: Float32Array.from(x), shape }]))[0]!.data;
  } finally {
    await s.session.release();
  }
}

function propertyOf(file: string, inputShape: number[], outputShape: number[]): VnnProperty {
  return bindProperty(parseVnnlib(fs.readFileSync(file, 'utf8'), file), inputShape, outputShape);
}

/** The counterexample is in a disjunct's box, and onnxruntime's outputs there satisfy its constraints. */
async function assertCounterexample(r: VnnlibReport, model: string, p: VnnProperty): Promise<void> {
  const cex = r.counterexample!;
  assert.ok(cex, 'sat without a counterexample');
  const y = await ortOutputs(model, r.model.input_shape, cex.x);
  assert.deepEqual(Array.from(y), cex.y);
  assert.ok(p.regions.some((g) => inBox(cex.x, g.lower, g.upper) && satisfiesAll(g.constraints, y)), `counterexample ${cex.x} → ${cex.y} is not in the unsafe region`);
}

test('abs.onnx: known sat and unsat properties, counterexamples confirmed by onnxruntime', async () => {
  const model = await VnnModel.open(fx.abs);
  try {
    assert.ok(model.engine && model.engine.batch > 1, 'the fixed batch of 1 (input and Reshape target) should have been freed for the engine');
    for (const name of ['joint_unsat', 'corner_sat', 'pgd_sat', 'disjunction_unsat', 'disjunction_sat', 'compare_unsat']) {
      const f = fx.properties[name]!;
      const r = await checkProperty(model, f.file, { timeout: 30 });
      assert.equal(r.result, f.expected, `${name} (${f.why}): ${r.result}, ${r.decided_by}`);
      const p = propertyOf(f.file, [1, 2], [1, 2]);
      if (r.result === 'sat') await assertCounterexample(r, fx.abs, p);
      else {
        assert.match(r.decided_by, /^CROWN \+ IBP bounds/);
        assert.equal(r.counterexample, undefined);
      }
      if (name === 'joint_unsat') assert.ok(r.bounds!.split && r.bounds!.max_depth > 0 && r.bounds!.boxes > 1, `joint_unsat needs input splitting: ${JSON.stringify(r.bounds)}`);
      if (name === 'pgd_sat') assert.match(r.decided_by, /^PGD/);
    }
    // VNN-COMP ships gzipped properties: name.vnnlib.gz is read when name.vnnlib is missing
    const gz = path.join(dir, 'compare_gz.vnnlib');
    fs.writeFileSync(`${gz}.gz`, zlib.gzipSync(fs.readFileSync(fx.properties.compare_unsat!.file)));
    assert.equal((await checkProperty(model, gz, { timeout: 30 })).result, 'unsat');
  } finally {
    await model.dispose();
  }
});

test('abs.onnx: random properties, unsat only where no input of the box is unsafe', async () => {
  // Y_0 = |x0 − x1| ≥ t0 and Y_1 = relu(x0 + x1 − 1) + 0.5 ≤ t1 over random boxes; "unsat" is checked against
  // a dense grid of the box evaluated exactly, "sat" by onnxruntime
  const model = await VnnModel.open(fx.abs);
  const rng = makeRng('vnnlib-random-properties');
  const seen = new Set<string>();
  try {
    for (let t = 0; t < 10; t++) {
      const lo = [rng() * 0.6, rng() * 0.6];
      const hi = lo.map((l) => l + 0.05 + rng() * 0.4);
      const t0 = rng() * 0.8;
      const t1 = 0.5 + rng() * 0.3;
      const file = path.join(dir, `random_${t}.vnnlib`);
      fs.writeFileSync(file, `${HEAD}(assert (>= X_0 ${lo[0]}))\n(assert (<= X_0 ${hi[0]}))\n(assert (>= X_1 ${lo[1]}))\n(assert (<= X_1 ${hi[1]}))\n(assert (>= Y_0 ${t0}))\n(assert (<= Y_1 ${t1}))\n`);
      const r = await checkProperty(model, file, { timeout: 20 });
      seen.add(r.result);
      assert.ok(r.result === 'sat' || r.result === 'unsat', `random property ${t}: ${r.result} (${r.decided_by})`);
      if (r.result === 'sat') await assertCounterexample(r, fx.abs, propertyOf(file, [1, 2], [1, 2]));
      else {
        const n = 200;
        for (let i = 0; i <= n; i++) for (let j = 0; j <= n; j++) {
          const x0 = lo[0]! + ((hi[0]! - lo[0]!) * i) / n;
          const x1 = lo[1]! + ((hi[1]! - lo[1]!) * j) / n;
          const unsafe = Math.abs(x0 - x1) >= t0 + 1e-6 && Math.max(0, x0 + x1 - 1) + 0.5 <= t1 - 1e-6;
          assert.ok(!unsafe, `random property ${t} answered unsat, but (${x0}, ${x1}) is unsafe`);
        }
      }
    }
  } finally {
    await model.dispose();
  }
  assert.deepEqual([...seen].sort(), ['sat', 'unsat'], 'the random properties should include both answers');
});

test('image.onnx (25 inputs, batch fixed to 1): bounds without splitting, sat, timeout', async () => {
  const model = await VnnModel.open(fx.image);
  try {
    assert.equal(model.engine?.batch, 1, 'Flatten with axis 0 keeps the engine at batch 1');
    const u = await checkProperty(model, fx.properties.image_unsat!.file, { timeout: 30 });
    assert.equal(u.result, 'unsat', u.decided_by);
    assert.equal(u.bounds!.split, false);
    assert.equal(u.bounds!.boxes, 1);
    const s = await checkProperty(model, fx.properties.image_sat!.file, { timeout: 30 });
    assert.equal(s.result, 'sat', s.decided_by);
    await assertCounterexample(s, fx.image, propertyOf(fx.properties.image_sat!.file, [1, 1, 5, 5], [1, 3]));
    const t = await checkProperty(model, fx.properties.image_unsat!.file, { timeout: 1e-4 });
    assert.equal(t.result, 'timeout');
  } finally {
    await model.dispose();
  }
});

test('softmax.onnx: no bounds through Softmax, so a true property stays unknown (never unsat)', async () => {
  const file = path.join(dir, 'softmax_p0.vnnlib');
  fs.writeFileSync(file, SOFTMAX_UNPROVABLE);
  const model = await VnnModel.open(fx.softmax);
  try {
    const r = await checkProperty(model, file, { timeout: 30 });
    assert.equal(r.result, 'unknown');
    assert.match(r.decided_by, /no bounds: .*Softmax/);
  } finally {
    await model.dispose();
  }
});

test('instances.csv: every row checked, result files written', async () => {
  const list = readInstances(fx.csv);
  assert.equal(list.length, 4);
  const out = path.join(dir, 'results');
  const r = await runInstances(fx.csv, { resultsDir: out });
  assert.deepEqual(r.instances.map((i) => i.result), ['unsat', 'sat', 'unsat', 'sat']);
  assert.deepEqual(r.counts, { sat: 2, unsat: 2, unknown: 0, timeout: 0, error: 0 });
  for (const [k, inst] of list.entries()) {
    const text = fs.readFileSync(path.join(out, resultFileName(inst)), 'utf8');
    assert.equal(text.split('\n')[0], r.instances[k]!.result);
    if (r.instances[k]!.result === 'sat') assert.match(text, /^sat\n\(\(X_0 [-\d.e]+\)\n \(X_1 /);
  }
  // a bad row names the csv line
  const bad = path.join(dir, 'bad.csv');
  fs.writeFileSync(bad, 'onnx/abs.onnx,vnnlib/joint_unsat.vnnlib,30\nonnx/abs.onnx,vnnlib/joint_unsat.vnnlib\n');
  assert.throws(() => readInstances(bad), /bad\.csv:2: expected 'onnx,vnnlib,timeout'/);
});

test('command line: --vnnlib with --results, --instances with --json, one-line errors', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, HYDRA_NO_PROGRESS: '1' } });
  const results = path.join(dir, 'cli-result.txt');
  const one = run('verify', fx.abs, '--vnnlib', fx.properties.corner_sat!.file, '--timeout', '30', '--results', results, '--quiet');
  assert.equal(one.status, 0, one.stderr);
  assert.match(one.stdout, /result {5}sat/);
  assert.match(fs.readFileSync(results, 'utf8'), /^sat\n\(\(X_0 [-\d.e]+\)\n \(X_1 [-\d.e]+\)\n \(Y_0 [-\d.e]+\)\n \(Y_1 [-\d.e]+\)\)\n$/);
  const all = run('verify', '--instances', fx.csv, '--json');
  assert.equal(all.status, 0, all.stderr);
  const report = JSON.parse(all.stdout) as { counts: Record<string, number>; instances: { result: string }[] };
  assert.deepEqual(report.counts, { sat: 2, unsat: 2, unknown: 0, timeout: 0, error: 0 });
  const badProp = path.join(dir, 'bad.vnnlib');
  fs.writeFileSync(badProp, `${HEAD}${BOX}(assert (<= Y_0 0.5)))\n`);
  const bad = run('verify', fx.abs, '--vnnlib', badProp);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^onnx-hydra: error: .*bad\.vnnlib:9:22: unexpected '\)' \(no '\(' is open\)\n$/);
  const mixed = run('verify', fx.abs, '--vnnlib', badProp, '--pgd', 'eps=0.1');
  assert.match(mixed.stderr, /--pgd does not apply to --vnnlib/);
});
