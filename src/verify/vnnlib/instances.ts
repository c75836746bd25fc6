// A VNN-COMP benchmark folder: instances.csv rows `onnx,vnnlib,timeout` (paths relative to the csv), each
// property checked on its model in turn. The last OPEN_MODELS models opened stay open for the next rows.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/fs.js';
import type { Provider } from '../../runtime/ort.js';
import type { BackendChoice } from '../../engine/select.js';
import { VnnModel } from './model.js';
import { checkProperty, type VnnlibReport, type VnnResult } from './check.js';
import { resultFileText } from './results.js';

/** models kept open between rows (least recently used closed first) */
const OPEN_MODELS = 4;

export interface Instance {
  /** line of the csv */
  line: number;
  onnx: string;
  vnnlib: string;
  timeout: number;
}

export function readInstances(csvFile: string): Instance[] {
  if (!fs.existsSync(csvFile)) throw new UserError(`instances file '${csvFile}' not found`);
  const dir = path.dirname(csvFile);
  const out: Instance[] = [];
  fs.readFileSync(csvFile, 'utf8').split(/\r?\n/).forEach((raw, i) => {
    const text = raw.trim();
    if (!text || text.startsWith('#')) return;
    const cells = text.split(',').map((c) => c.trim());
    if (cells.length !== 3 || !cells[0] || !cells[1]) throw new UserError(`${csvFile}:${i + 1}: expected 'onnx,vnnlib,timeout', got '${text}'`);
    const timeout = Number(cells[2]);
    if (!(Number.isFinite(timeout) && timeout > 0)) throw new UserError(`${csvFile}:${i + 1}: the timeout must be a number of seconds > 0, got '${cells[2]}'`);
    out.push({ line: i + 1, onnx: path.join(dir, cells[0]), vnnlib: path.join(dir, cells[1]), timeout });
  });
  if (!out.length) throw new UserError(`${csvFile} lists no instances`);
  return out;
}

export interface InstanceResult {
  line: number;
  onnx: string;
  vnnlib: string;
  timeout: number;
  result: VnnResult | 'error';
  decided_by: string;
  seconds: number;
  /** the full report (not for errors) */
  report?: VnnlibReport;
}

export interface InstancesReport {
  command: 'verify --instances';
  csv: string;
  cpu: string;
  instances: InstanceResult[];
  counts: Record<VnnResult | 'error', number>;
  seconds: number;
}

export interface InstancesOptions {
  /** seconds per instance instead of the csv's */
  timeout?: number;
  seed?: number;
  provider?: Provider;
  backend?: BackendChoice;
  /** write each instance's VNN-COMP result file into this folder */
  resultsDir?: string;
  log?: (s: string) => void;
  onInstance?: (r: InstanceResult, index: number, total: number) => void;
}

/** The result file of an instance in a results folder: `<csv line>_<onnx name>_<vnnlib name>.txt`. */
export function resultFileName(i: Instance): string {
  const stem = (f: string): string => path.basename(f).replace(/\.gz$/, '').replace(/\.(onnx|vnnlib)$/, '');
  return `${i.line}_${stem(i.onnx)}_${stem(i.vnnlib)}.txt`;
}

export async function runInstances(csvFile: string, o: InstancesOptions = {}): Promise<InstancesReport> {
  const t0 = performance.now();
  const list = readInstances(csvFile);
  const results: InstanceResult[] = [];
  // by file, in order of last use
  const open = new Map<string, VnnModel>();
  try {
    for (const [index, inst] of list.entries()) {
      const start = performance.now();
      const timeout = o.timeout ?? inst.timeout;
      let r: InstanceResult;
      try {
        let model = open.get(inst.onnx);
        open.delete(inst.onnx);
        if (!model) {
          if (open.size >= OPEN_MODELS) {
            const [oldest, m] = open.entries().next().value!;
            open.delete(oldest);
            await m.dispose();
          }
          model = await VnnModel.open(inst.onnx, { provider: o.provider, backend: o.backend });
        }
        open.set(inst.onnx, model);
        const report = await checkProperty(model, inst.vnnlib, { timeout, seed: o.seed, startedAt: start, log: o.log });
        r = { line: inst.line, onnx: inst.onnx, vnnlib: inst.vnnlib, timeout, result: report.result, decided_by: report.decided_by, seconds: report.seconds, report };
      } catch (e) {
        if (!(e instanceof UserError)) throw e;
        r = { line: inst.line, onnx: inst.onnx, vnnlib: inst.vnnlib, timeout, result: 'error', decided_by: e.message, seconds: (performance.now() - start) / 1000 };
      }
      if (o.resultsDir && r.result !== 'error') writeFileAtomic(path.join(o.resultsDir, resultFileName(inst)), resultFileText(r.report!));
      results.push(r);
      o.onInstance?.(r, index, list.length);
    }
  } finally {
    for (const m of open.values()) await m.dispose();
  }
  const counts = { sat: 0, unsat: 0, unknown: 0, timeout: 0, error: 0 };
  for (const r of results) counts[r.result]++;
  return { command: 'verify --instances', csv: csvFile, cpu: os.cpus()[0]?.model ?? 'unknown', instances: results, counts, seconds: (performance.now() - t0) / 1000 };
}
