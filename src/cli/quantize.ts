// `onnx-hydra quantize`: an int8 QDQ copy of any ONNX classifier, calibrated on training images, with its
// onnxruntime accuracy next to the float model's.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { CommandModule } from 'yargs';
import { quantizeOptions } from '../options/commands.js';
import { loadModel, saveModel } from '../onnx/model.js';
import { calibrationSet, quantizeInt8 } from '../quant/qdq.js';
import { toSparseIfLoadable } from '../runtime/ort.js';
import { checkDataFitsModel, loadData } from '../data/index.js';
import { OrtClassifier } from '../verify/classifier.js';
import { realInputs, declaredShape, encodeModel } from '../onnx/model.js';
import { parseChannels, withInputNormalization } from '../onnx/normalize-input.js';
import { writeFileAtomic } from '../util/fs.js';
import { UserError } from '../util/errors.js';
import { pct, printJson } from './common.js';

type Args = Record<string, unknown> & { model: string; json: boolean; out?: string };

async function accuracyAndPredictions(file: string | Uint8Array, x: Float32Array, y: Int32Array, shape: [number, number, number]): Promise<{ acc: number; pred: Int32Array }> {
  const c = await OrtClassifier.open(file, [...shape], undefined, { maxBatch: 500 });
  try {
    const pred = await c.predict(x, y.length);
    let ok = 0;
    for (let i = 0; i < y.length; i++) if (pred[i] === y[i]) ok++;
    return { acc: y.length ? ok / y.length : 0, pred };
  } finally {
    await c.release();
  }
}

export const quantizeCommand: CommandModule<object, Args> = {
  command: 'quantize <model>',
  describe: 'write an int8 QDQ model: per-channel symmetric int8 weights, uint8 activations calibrated on training images',
  builder: (y) => quantizeOptions(y) as never,
  handler: async (a) => {
    const t0 = performance.now();
    const out = a.out ?? a.model.replace(/\.onnx$/, '') + '.int8.onnx';
    if (path.resolve(out) === path.resolve(a.model)) throw new UserError(`--out '${out}' would overwrite the input model; choose another file`);
    const cn = Number(a['calibration-size']);
    if (!Number.isInteger(cn) || cn < 1) throw new UserError(`--calibration-size must be an integer ≥ 1, got ${a['calibration-size']}`);
    const p = Number(a.percentile);
    if (!(p > 50 && p <= 100)) throw new UserError(`--percentile must be in (50, 100], got ${a.percentile}`);
    const data = loadData(String(a.data));
    const model = withInputNormalization(loadModel(a.model), parseChannels('mean', a.mean), parseChannels('std', a.std));
    const floatSource: string | Uint8Array = a.mean !== undefined || a.std !== undefined ? encodeModel(model) : a.model;
    const inputs = realInputs(model.proto.graph!);
    const declared = inputs.length === 1 ? declaredShape(inputs[0]!) : undefined;
    if (declared?.length === 4) checkDataFitsModel(data.train, declared);
    const n = Math.min(cn, data.train.length);
    const per = data.train.shape.reduce((s, d) => s * d, 1);
    const q = await quantizeInt8(model, calibrationSet(data.train, n), { calibration: a.calibration as 'minmax' | 'percentile', percentile: p });
    let qModel = q.model;
    let format = 'dense';
    if (a['sparse-format'] === 'sparse-initializer') {
      const names = q.report.weights.map((w) => `${w.name}/int8`);
      const sp = await toSparseIfLoadable(qModel, names);
      if (sp.ok) (qModel = sp.model), (format = 'sparse-initializer');
      else process.stderr.write(`note: onnxruntime-node did not load sparse int8 initializers (${sp.why}); kept dense\n`);
    }
    const bytes = saveModel(qModel, out);
    const test = data.test;
    const m = Math.min(a['eval-limit'] !== undefined ? Number(a['eval-limit']) : test.length, test.length);
    const xs = test.x.subarray(0, m * per);
    const ys = test.y.subarray(0, m);
    const f = await accuracyAndPredictions(floatSource, xs, ys, test.shape);
    const qa = await accuracyAndPredictions(out, xs, ys, test.shape);
    let agree = 0;
    for (let i = 0; i < m; i++) if (f.pred[i] === qa.pred[i]) agree++;
    const report = {
      command: 'quantize', model: a.model, out, calibration: a.calibration, calibration_images: n, percentile: a.calibration === 'percentile' ? p : undefined,
      format, bytes, gzip_bytes: zlib.gzipSync(fs.readFileSync(out), { level: 9 }).length, float_bytes: fs.statSync(a.model).size,
      test_images: m, float_accuracy: f.acc, int8_accuracy: qa.acc, agreement: m ? agree / m : 1,
      quantized: { weights: q.report.weights.length, activations: q.report.activations.length },
      seconds: (performance.now() - t0) / 1000,
    };
    writeFileAtomic(`${out}.report.json`, JSON.stringify(report, null, 2));
    if (a.json) printJson(report);
    else {
      process.stdout.write(
        `${a.model} → ${out} (int8 QDQ, ${q.report.weights.length} weight tensors, ${q.report.activations.length} activations, ${a.calibration} calibration on ${n} images)\n` +
        `  size      ${report.float_bytes} → ${bytes} bytes (${report.gzip_bytes} gzip-compressed)\n` +
        `  accuracy  float ${pct(f.acc, 2)}, int8 ${pct(qa.acc, 2)} on ${m} test images (onnxruntime-node); ${pct(report.agreement, 2)} same predictions\n`,
      );
    }
  },
};
