// `onnx-hydra verify <model> --vnnlib prop.vnnlib` and `onnx-hydra verify --instances instances.csv`: VNN-LIB
// properties decided as sat (counterexample confirmed by onnxruntime), unsat (proven by bounds), unknown or
// timeout, with VNN-COMP result files (--results).
import path from 'node:path';
import { UserError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import type { Provider } from '../runtime/ort.js';
import type { BackendChoice } from '../engine/select.js';
import { VnnModel } from '../verify/vnnlib/model.js';
import { checkProperty, type VnnlibReport } from '../verify/vnnlib/check.js';
import { runInstances, type InstancesReport } from '../verify/vnnlib/instances.js';
import { resultFileText } from '../verify/vnnlib/results.js';
import { printJson, table } from './common.js';

/** seconds per property when --vnnlib has no --timeout */
export const DEFAULT_VNNLIB_TIMEOUT = 60;

const given = (v: unknown): boolean => v !== undefined && v !== false;

/** Whether the verify command was asked for VNN-LIB checking (throws for --timeout or --results without it). */
export function wantsVnnlib(a: Record<string, unknown>): boolean {
  const wanted = given(a.vnnlib) || given(a.instances);
  for (const flag of ['timeout', 'results']) if (!wanted && given(a[flag])) throw new UserError(`--${flag} applies to --vnnlib and --instances only`);
  return wanted;
}

export async function runVnnlibCommand(a: Record<string, unknown>): Promise<void> {
  const vnnlib = given(a.vnnlib) ? String(a.vnnlib) : undefined;
  const instances = given(a.instances) ? String(a.instances) : undefined;
  if (vnnlib && instances) throw new UserError('give either --vnnlib (one property) or --instances (a benchmark), not both');
  for (const flag of ['pgd', 'square', 'autoattack', 'smoothing', 'ibp', 'crown', 'limit', 'mean', 'std']) {
    if (given(a[flag])) throw new UserError(`--${flag} does not apply to --${vnnlib ? 'vnnlib' : 'instances'}`);
  }
  if (a.latency) throw new UserError(`--latency does not apply to --${vnnlib ? 'vnnlib' : 'instances'}`);
  let timeout: number | undefined;
  if (a.timeout !== undefined) {
    timeout = Number(a.timeout);
    if (!(Number.isFinite(timeout) && timeout > 0)) throw new UserError(`--timeout must be a number of seconds > 0, got ${a.timeout}`);
  }
  const jsonTo = a.json === undefined ? undefined : String(a.json);
  const jsonStdout = jsonTo === '';
  const quiet = !!a.quiet || jsonStdout;
  const log = (s: string): void => void (!quiet && process.stderr.write(`${s}\n`));
  const common = { seed: Number(a.seed ?? 0), provider: (a.provider ?? 'cpu') as Provider, backend: (a.backend ?? 'auto') as BackendChoice };
  const results = given(a.results) ? String(a.results) : undefined;

  let report: VnnlibReport | InstancesReport;
  let text: string;
  if (vnnlib) {
    if (!a.model) throw new UserError('name the ONNX model to check the property on: onnx-hydra verify <model.onnx> --vnnlib <prop.vnnlib>');
    const t0 = performance.now();
    const model = await VnnModel.open(String(a.model), { provider: common.provider, backend: common.backend });
    try {
      report = await checkProperty(model, vnnlib, { timeout: timeout ?? DEFAULT_VNNLIB_TIMEOUT, seed: common.seed, startedAt: t0, log });
    } finally {
      await model.dispose();
    }
    if (results) writeFileAtomic(results, resultFileText(report));
    text = renderVnnlib(report) + (results ? `  result file ${results}\n` : '');
  } else {
    if (a.model) throw new UserError(`--instances takes the models from ${instances}; do not name a model`);
    report = await runInstances(instances!, {
      ...common, timeout, resultsDir: results, log,
      onInstance: (r, i, n) => log(`[${i + 1}/${n}] ${path.basename(r.onnx)} ${path.basename(r.vnnlib)}: ${r.result} (${r.seconds.toFixed(2)} s)`),
    });
    text = renderInstances(report) + (results ? `  result files in ${results}\n` : '');
  }
  if (jsonTo) writeFileAtomic(jsonTo, JSON.stringify(report, null, 2));
  if (jsonStdout) printJson(report);
  else process.stdout.write(text + (jsonTo ? `  report: ${jsonTo}\n` : ''));
  for (const w of 'warnings' in report ? report.warnings : []) process.stderr.write(`warning: ${w}\n`);
}

const list = (v: number[]): string => (v.length > 12 ? `[${v.slice(0, 12).map((x) => +x.toPrecision(6)).join(', ')}, … (${v.length})]` : `[${v.map((x) => +x.toPrecision(6)).join(', ')}]`);

/** The readable form of one property's report. */
export function renderVnnlib(r: VnnlibReport): string {
  const a = r.attack;
  const lines = [
    `${r.model.file}  sha256 ${r.model.sha256.slice(0, 16)}…  input [${r.model.input_shape}], output [${r.model.output_shape}]`,
    `  property   ${r.property.file}: ${r.property.disjuncts} disjunct(s), ${r.property.boxes} input box(es), ${r.property.constraints} output constraint(s)`,
    `  result     ${r.result}`,
    `  decided by ${r.decided_by}`,
    `  attack     ${a.samples} random inputs, ${a.pgd_restarts} PGD runs (${a.pgd_steps} example-steps), ${a.candidates} candidates checked by onnxruntime (${a.rejected} rejected), ${a.seconds.toFixed(2)} s`,
  ];
  if (r.bounds) lines.push(`  bounds     ${r.bounds.method}: ${r.bounds.boxes} box${r.bounds.boxes === 1 ? '' : 'es'}${r.bounds.split ? `, splitting to depth ${r.bounds.max_depth}` : ', no splitting'}, ${r.bounds.bound_calls} onnxruntime calls, ${r.bounds.seconds.toFixed(2)} s`);
  if (r.counterexample) lines.push(`  counterexample X = ${list(r.counterexample.x)}`, `                 Y = ${list(r.counterexample.y)} (onnxruntime)`);
  if (r.engine) lines.push(`  engine     ${r.engine}`);
  lines.push(`  (${r.seconds.toFixed(2)} s, timeout ${r.timeout_seconds} s)`);
  return `${lines.join('\n')}\n`;
}

/** The summary table of a benchmark run. */
export function renderInstances(r: InstancesReport): string {
  const dir = path.dirname(r.csv);
  const short = (s: string): string => (s.length > 70 ? `${s.slice(0, 69)}…` : s);
  const rows = r.instances.map((i) => [i.line, path.relative(dir, i.onnx), path.relative(dir, i.vnnlib), i.result, i.seconds.toFixed(2), short(i.decided_by)]);
  const c = r.counts;
  return (
    `${r.csv}: ${r.instances.length} instances (CPU: ${r.cpu})\n\n` +
    table(['line', 'onnx', 'vnnlib', 'result', 'seconds', 'decided by'], rows) + '\n\n' +
    `  sat ${c.sat}, unsat ${c.unsat}, unknown ${c.unknown}, timeout ${c.timeout}, error ${c.error}; ${r.seconds.toFixed(2)} s in all\n`
  );
}
