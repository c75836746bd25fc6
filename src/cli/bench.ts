import fs from 'node:fs';
import type { CommandModule } from 'yargs';
import * as ort from 'onnxruntime-node';
import { loadModel, realInputs } from '../onnx/model.js';
import { summarize } from '../graph/analyze.js';
import { measureLatency, type LatencyResult } from '../runtime/latency.js';
import { cpuInfo } from '../runtime/cpu.js';
import { UserError } from '../util/errors.js';
import { fmtInt, parseInputShapes, printJson, table } from './common.js';
import { defaultThreads } from '../util/threads.js';

interface Args { models: string[]; threads: number; batch: number; seconds: number; json: boolean; 'input-shape'?: string[] }

export interface BenchRow {
  file: string;
  bytes: number;
  params: number;
  /** multiply-accumulates per image; null when onnx-hydra cannot trace the graph */
  macs: number | null;
  input_shape: number[];
  latency: LatencyResult;
  /** this file's numbers divided by the first file's (absent on the first row) */
  ratios?: { bytes: number; params: number; macs: number | null; batch1_median_ms: number; batch1_p90_ms: number; images_per_second: number };
}

/** Per-example input shape of a model's first input: the declared one, or `--input-shape` for free dimensions. */
function perSampleShape(file: string, declared: (number | string)[], override?: number[]): number[] {
  const shape = override ?? declared;
  const rest = shape.slice(1);
  const free = rest.findIndex((d) => typeof d !== 'number' || d <= 0);
  if (free >= 0) throw new UserError(`${file}: input dimension ${free + 1} is free ('${rest[free]}'); give it with --input-shape, e.g. 1,3,224,224`);
  return rest as number[];
}

export const benchCommand: CommandModule<object, Args> = {
  command: 'bench <models..>',
  describe: 'onnxruntime-node latency of ONNX files side by side (batch 1 median/p90, batch N images/s) with parameters, MACs and bytes; later rows as ratios to the first',
  builder: (y) =>
    y
      .positional('models', { type: 'string', array: true, demandOption: true, describe: 'ONNX model files (the first is the reference)' })
      .option('threads', { type: 'number', default: 0, describe: 'onnxruntime intra-op threads (0: one per core)' })
      .option('batch', { type: 'number', default: 64, describe: 'the large batch, measured in images/s' })
      .option('seconds', { type: 'number', default: 1, describe: 'time per measurement, after a warm-up' })
      .option('input-shape', { type: 'string', array: true, describe: 'fix free input dimensions other than the batch: 1,3,224,224 or name=1,3,224,224' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object instead of text' }) as never,
  handler: async (args) => {
    if (!Number.isInteger(args.threads) || args.threads < 0) throw new UserError(`--threads must be a non-negative integer, got ${args.threads}`);
    if (!Number.isInteger(args.batch) || args.batch < 1) throw new UserError(`--batch must be a positive integer, got ${args.batch}`);
    if (!(args.seconds > 0)) throw new UserError(`--seconds must be positive, got ${args.seconds}`);
    for (const f of args.models) if (!fs.existsSync(f)) throw new UserError(`model file '${f}' not found`);
    // load and describe everything before timing anything, so a bad file fails fast
    const files = args.models.map((file) => {
      const model = loadModel(file);
      const first = realInputs(model.proto.graph!)[0]?.name ?? '';
      const shapes = parseInputShapes(args['input-shape'], first);
      const summary = summarize(model, { inputShapes: shapes });
      const input = summary.inputs[0];
      if (!input) throw new UserError(`${file}: the model has no input`);
      return { file, summary, perSample: perSampleShape(file, input.shape, shapes?.[input.name]) };
    });
    const rows: BenchRow[] = [];
    for (const { file, summary, perSample } of files) {
      const latency = await measureLatency(file, perSample, { batch: args.batch, threads: args.threads, seconds: args.seconds });
      rows.push({ file, bytes: summary.bytes, params: summary.parameters.total, macs: summary.macs ?? null, input_shape: perSample, latency });
    }
    const ref = rows[0]!;
    for (const r of rows.slice(1)) {
      r.ratios = {
        bytes: r.bytes / ref.bytes,
        params: r.params / ref.params,
        macs: r.macs !== null && ref.macs ? r.macs / ref.macs : null,
        batch1_median_ms: r.latency.batch1.median_ms / ref.latency.batch1.median_ms,
        batch1_p90_ms: r.latency.batch1.p90_ms / ref.latency.batch1.p90_ms,
        images_per_second: r.latency.batchN.images_per_second / ref.latency.batchN.images_per_second,
      };
    }
    const cpu = cpuInfo();
    const runtime = `onnxruntime-node ${ort.env.versions.node ?? ''}`.trim();
    if (args.json) return printJson({ cpu, runtime, threads: args.threads || defaultThreads(), batch: args.batch, seconds: args.seconds, rows });
    const x = (v: number | null | undefined): string => (v === null || v === undefined ? '' : ` (${v.toFixed(2)}x)`);
    const lines = [
      `CPU: ${cpu.model}, ${cpu.cores} cores, ${cpu.isa.join(' ') || 'no AVX2/AVX-512'}`,
      `${runtime}, ${args.threads || defaultThreads()} threads${args.threads ? '' : ' (one per physical core)'}; batch 1: median and 90th percentile of single runs; batch ${args.batch}: images/s (~${args.seconds} s each after a warm-up)`,
      '',
      table(['file', 'bytes', 'params', 'MACs/image', 'batch-1 median ms', 'batch-1 p90 ms', `batch-${args.batch} img/s`], rows.map((r) => [
        r.file,
        fmtInt(r.bytes) + x(r.ratios?.bytes),
        fmtInt(r.params) + x(r.ratios?.params),
        (r.macs === null ? 'n/a' : fmtInt(r.macs)) + x(r.ratios?.macs),
        r.latency.batch1.median_ms.toFixed(3) + x(r.ratios?.batch1_median_ms),
        r.latency.batch1.p90_ms.toFixed(3) + x(r.ratios?.batch1_p90_ms),
        fmtInt(Math.round(r.latency.batchN.images_per_second)) + x(r.ratios?.images_per_second),
      ])),
    ];
    if (rows.length > 1) lines.push('', `(0.50x): ratio to the first file, ${ref.file}`);
    process.stdout.write(`${lines.join('\n')}\n`);
  },
};
