// `onnx-hydra verify`: benign, PGD, Square, randomized-smoothing and IBP accuracy of an ONNX file, judged
// by onnxruntime-node running that file.
import type { CommandModule } from 'yargs';
import { loadData } from '../data/index.js';
import type { Dataset } from '../data/index.js';
import { verifyModel, type VerifyReport } from '../verify/verify.js';
import type { PgdEvalConfig } from '../verify/robustness.js';
import type { SquareConfig } from '../verify/square.js';
import { AUTOATTACK_ATTACKS, type AutoAttackConfig } from '../verify/autoattack.js';
import type { SmoothingConfig } from '../verify/smoothing.js';
import type { Provider } from '../runtime/ort.js';
import { withNormalization } from '../options/training.js';
import { BACKENDS, type BackendChoice } from '../engine/select.js';
import { writeFileAtomic } from '../util/fs.js';
import { UserError } from '../util/errors.js';
import { parseInputShapes, pct, printJson, table } from './common.js';
import { parseChannels } from '../onnx/normalize-input.js';
import { runVnnlibCommand, wantsVnnlib } from './vnnlib.js';

type Args = Record<string, unknown> & { model: string };

/** `eps=0.1,steps=20` → { eps: '0.1', steps: '20' }; keys checked against `allowed`. */
export function parseSpec(flag: string, v: unknown, allowed: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const s = v === true || v === undefined ? '' : String(v);
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z_0-9]+)=(.+)$/i.exec(part);
    if (!m) throw new UserError(`--${flag}: expected key=value pairs separated by commas (keys: ${allowed.join(', ')}), got '${part}'`);
    if (!allowed.includes(m[1]!)) throw new UserError(`--${flag}: unknown key '${m[1]}' (keys: ${allowed.join(', ')})`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

function num(flag: string, spec: Record<string, string>, key: string, dflt: number, check: (v: number) => boolean, what: string): number {
  if (spec[key] === undefined) return dflt;
  const v = Number(spec[key]);
  if (!Number.isFinite(v) || !check(v)) throw new UserError(`--${flag}: ${key} must be ${what}, got '${spec[key]}'`);
  return v;
}

/** Common practice per dataset: ε in [0,1] pixels, step sizes, steps. */
export function attackDefaults(d: Dataset): { eps: number; steps: number; alpha: number; l2eps: number } {
  if (d.shape[0] === 3) return { eps: 8 / 255, steps: 20, alpha: 2 / 255, l2eps: 0.5 };
  if (/^mnist/.test(d.name)) return { eps: 0.3, steps: 40, alpha: 0.01, l2eps: 1.5 };
  return { eps: 0.1, steps: 20, alpha: 0.0125, l2eps: 1.0 };
}

const given = (v: unknown): boolean => v !== undefined && v !== false;

/** `--autoattack eps=…,norm=linf|l2,version=standard|fast`; ε defaults to the dataset's (L∞ or L2). */
export function parseAutoAttack(v: unknown, def: { eps: number; l2eps: number }): AutoAttackConfig {
  const s = parseSpec('autoattack', v, ['eps', 'norm', 'version']);
  const norm = s.norm ?? 'linf';
  if (norm !== 'linf' && norm !== 'l2') throw new UserError(`--autoattack: norm must be linf or l2, got '${s.norm}'`);
  const version = s.version ?? 'standard';
  if (version !== 'standard' && version !== 'fast') throw new UserError(`--autoattack: version must be standard or fast, got '${s.version}'`);
  const eps = num('autoattack', s, 'eps', norm === 'l2' ? def.l2eps : def.eps, (x) => x >= 0, '≥ 0');
  return { eps, norm, version };
}

export const verifyCommand: CommandModule<object, Args> = {
  command: 'verify [model]',
  describe: 'benign, PGD, Square-attack, randomized-smoothing and IBP accuracy of an ONNX file, run by onnxruntime-node',
  builder: (y) =>
    withNormalization(y)
      .positional('model', { type: 'string', describe: 'ONNX classifier (float or int8 QDQ)' })
      .option('data', { type: 'string', default: 'fashion-mnist', describe: 'fashion-mnist | fashion-mnist:<dir> | mnist:<dir> | idx:<images.gz>,<labels.gz> (the test split is used)' })
      .option('limit', { type: 'number', describe: 'first N test images (default: all)' })
      .option('batch-size', { type: 'number', default: 256 })
      .option('benign', { type: 'boolean', default: false, describe: 'benign accuracy (always measured; alone, nothing else runs)' })
      .option('pgd', {
        type: 'string',
        describe: 'PGD: eps=,alpha=,steps=,restarts=,norm=linf|l2. Defaults: Fashion-MNIST ε 0.1, 20 steps of 0.0125; MNIST ε 0.3, 40 steps of 0.01; 3-channel (CIFAR) ε 8/255, 20 steps of 2/255; L2 ε 1.0/1.5/0.5; 1 restart, random start; images clipped to [0,1] after every step',
      })
      .option('square', { type: 'string', describe: 'Square attack on the artifact: queries=1000,eps=<PGD ε>,p=0.05 (L∞)' })
      .option('autoattack', {
        type: 'string',
        describe: 'AutoAttack (Croce & Hein 2020) on the artifact: eps=<dataset ε>,norm=linf|l2,version=standard|fast. standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries), each on the examples still robust; fast: APGD-CE, APGD-T',
      })
      .option('save-adversarial', { type: 'string', describe: 'with --autoattack: write FILE.npy, float32 [n, …input shape]: per evaluated image, in order, the first input onnxruntime confirmed as fooling it, else the clean image' })
      .option('robustbench', { type: 'string', describe: 'with --autoattack: write a RobustBench-style model entry (JSON): clean and AutoAttack accuracy, ε, threat model, dataset, architecture' })
      .option('smoothing', { type: 'string', describe: 'randomized smoothing: sigma=0.25,n0=100,n=10000,alpha=0.001,batch=1000,mode=certify|predict|both' })
      .option('radii', { type: 'string', default: '0,0.25,0.5,0.75,1', describe: 'L2 radii at which certified accuracy is reported' })
      .option('ibp', { type: 'string', describe: 'IBP verified accuracy: eps=<PGD ε>' })
      .option('crown', { type: 'string', describe: 'CROWN verified accuracy (never below IBP\'s): eps=<PGD ε>,neurons=<largest ReLU layer, per example, bounded by its own CROWN pass; 4096>,alpha=true (α-CROWN: optimised slopes),alpha_steps=20,alpha_lr=0.1' })
      .option('latency', { type: 'boolean', default: false, describe: 'also measure MACs, parameters and onnxruntime latency: batch 1 (median, p90 ms) and --latency-batch (img/s)' })
      .option('latency-batch', { type: 'number', default: 64, describe: 'the large batch of --latency' })
      .option('threads', { type: 'number', default: 0, describe: 'onnxruntime intra-op threads for --latency (0: one per core)' })
      .option('provider', { type: 'string', default: 'cpu', choices: ['cpu', 'cuda'], describe: 'onnxruntime-node execution provider' })
      .option('backend', { type: 'string', default: 'auto', choices: BACKENDS as unknown as string[], describe: 'engine computing PGD gradients' })
      .option('input-shape', { type: 'string', array: true, describe: 'fix free input dimensions other than the batch' })
      .option('seed', { type: 'number', default: 0 })
      .option('json', { type: 'string', describe: 'write the JSON report to this file (no file: print it instead of the table)' })
      .option('vnnlib', { type: 'string', describe: 'decide a VNN-LIB property (the unsafe region) on the model: sat (counterexample confirmed by onnxruntime), unsat (proven by bounds), unknown or timeout' })
      .option('timeout', { type: 'number', describe: 'seconds per VNN-LIB property (--vnnlib default 60; --instances: instead of the csv\'s)' })
      .option('instances', { type: 'string', describe: 'VNN-COMP instances.csv (onnx,vnnlib,timeout per row, paths relative to it): check every row, print a summary' })
      .option('results', { type: 'string', describe: 'VNN-COMP result file of --vnnlib (sat/unsat/unknown/timeout, and the counterexample); with --instances a folder of them' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bars' }) as never,
  handler: async (a) => {
    if (wantsVnnlib(a)) return runVnnlibCommand(a);
    if (!a.model) throw new UserError('name the ONNX model to verify: onnx-hydra verify <model.onnx>');
    const jsonTo = a.json === undefined ? undefined : String(a.json);
    const jsonStdout = jsonTo === '';
    const quiet = !!a.quiet || jsonStdout;
    const log = (s: string): void => void (!quiet && process.stderr.write(`${s}\n`));
    const batch = Number(a['batch-size']);
    if (!Number.isInteger(batch) || batch < 1) throw new UserError(`--batch-size must be an integer ≥ 1, got ${a['batch-size']}`);
    if (a.limit !== undefined && !(Number.isInteger(Number(a.limit)) && Number(a.limit) >= 1)) throw new UserError(`--limit must be an integer ≥ 1, got ${a.limit}`);
    const provider = a.provider as Provider;
    for (const [flag, min] of [['latency-batch', 1], ['threads', 0]] as const) {
      if (!Number.isInteger(Number(a[flag])) || Number(a[flag]) < min) throw new UserError(`--${flag} must be an integer ≥ ${min}, got ${a[flag]}`);
    }
    const data = loadData(String(a.data));
    const d = data.test;
    const def = attackDefaults(d);
    const onlyBenign = !!a.benign && ![a.pgd, a.square, a.smoothing, a.ibp, a.crown, a.autoattack].some(given);
    const anyMetric = [a.pgd, a.square, a.smoothing, a.ibp, a.crown, a.autoattack].some(given);
    for (const flag of ['save-adversarial', 'robustbench'] as const) {
      if (a[flag] !== undefined && !given(a.autoattack)) throw new UserError(`--${flag} needs --autoattack (it records the AutoAttack verdict)`);
      if (a[flag] !== undefined && !String(a[flag])) throw new UserError(`--${flag} needs a file name`);
    }

    let pgd: PgdEvalConfig | undefined;
    if (given(a.pgd) || (!onlyBenign && !anyMetric)) {
      const s = parseSpec('pgd', a.pgd, ['eps', 'alpha', 'steps', 'restarts', 'norm', 'random_start']);
      const norm = (s.norm ?? 'linf') as 'linf' | 'l2';
      if (norm !== 'linf' && norm !== 'l2') throw new UserError(`--pgd: norm must be linf or l2, got '${s.norm}'`);
      const eps = num('pgd', s, 'eps', norm === 'l2' ? def.l2eps : def.eps, (v) => v >= 0, '≥ 0');
      const steps = num('pgd', s, 'steps', def.steps, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
      const alpha = num('pgd', s, 'alpha', norm === 'l2' ? (2.5 * eps) / steps : s.eps !== undefined || s.steps !== undefined ? (2.5 * eps) / steps : def.alpha, (v) => v > 0, '> 0');
      const restarts = num('pgd', s, 'restarts', 1, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
      pgd = { eps, alpha, steps, restarts, norm, randomStart: s.random_start !== 'false' && s.random_start !== '0' };
    }
    let square: SquareConfig | undefined;
    if (given(a.square)) {
      const s = parseSpec('square', a.square, ['queries', 'eps', 'p']);
      square = {
        queries: num('square', s, 'queries', 1000, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1'),
        eps: num('square', s, 'eps', pgd?.norm === 'linf' ? pgd.eps : def.eps, (v) => v >= 0, '≥ 0'),
        pInit: num('square', s, 'p', 0.05, (v) => v > 0 && v <= 1, 'in (0, 1]'),
      };
    }
    const autoattack = given(a.autoattack) ? parseAutoAttack(a.autoattack, def) : undefined;
    let ibp: { eps: number } | undefined;
    if (given(a.ibp)) {
      const s = parseSpec('ibp', a.ibp, ['eps']);
      ibp = { eps: num('ibp', s, 'eps', pgd?.norm === 'linf' ? pgd.eps : def.eps, (v) => v >= 0, '≥ 0') };
    }
    let crown: { eps: number; neurons: number; alpha?: { steps: number; lr: number } } | undefined;
    if (given(a.crown)) {
      const s = parseSpec('crown', a.crown, ['eps', 'neurons', 'alpha', 'alpha_steps', 'alpha_lr']);
      if (s.alpha !== undefined && s.alpha !== 'true' && s.alpha !== 'false') throw new UserError(`--crown: alpha must be true or false, got '${s.alpha}'`);
      crown = {
        eps: num('crown', s, 'eps', pgd?.norm === 'linf' ? pgd.eps : def.eps, (v) => v >= 0, '≥ 0'),
        neurons: num('crown', s, 'neurons', 4096, (v) => Number.isInteger(v) && v >= 0, 'an integer ≥ 0'),
        ...(s.alpha === 'true' ? {
          alpha: {
            steps: num('crown', s, 'alpha_steps', 20, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1'),
            lr: num('crown', s, 'alpha_lr', 0.1, (v) => v > 0, '> 0'),
          },
        } : {}),
      };
    }
    let smoothing: (SmoothingConfig & { radii: number[]; mode: 'certify' | 'predict' | 'both' }) | undefined;
    if (given(a.smoothing)) {
      const s = parseSpec('smoothing', a.smoothing, ['sigma', 'n0', 'n', 'alpha', 'batch', 'mode']);
      const sigma = num('smoothing', s, 'sigma', 0.25, (v) => v > 0, '> 0');
      const n0 = num('smoothing', s, 'n0', 100, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
      const n = num('smoothing', s, 'n', 10000, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
      if (n0 > n) throw new UserError(`--smoothing: n0 (${n0}) must not exceed n (${n})`);
      const alpha = num('smoothing', s, 'alpha', 0.001, (v) => v > 0 && v < 0.5, 'in (0, 0.5)');
      const mode = (s.mode ?? 'certify') as 'certify' | 'predict' | 'both';
      if (!['certify', 'predict', 'both'].includes(mode)) throw new UserError(`--smoothing: mode must be certify, predict or both, got '${s.mode}'`);
      const radii = String(a.radii).split(',').map(Number);
      if (radii.some((r) => !Number.isFinite(r) || r < 0)) throw new UserError(`--radii expects radii ≥ 0 like 0,0.25,0.5, got '${a.radii}'`);
      smoothing = { sigma, n0, n, alpha, batch: num('smoothing', s, 'batch', 1000, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1'), radii, mode };
    }

    const report = await verifyModel({
      model: a.model, data: d, dataSpec: data.spec, limit: a.limit !== undefined ? Number(a.limit) : undefined, batch, provider,
      backend: a.backend as BackendChoice, prepare: { inputShapes: parseInputShapes(a['input-shape'] as string[] | undefined) },
      pgd, square, ibp, crown, smoothing, seed: Number(a.seed), quiet, log, autoattack,
      saveAdversarial: a['save-adversarial'] !== undefined ? String(a['save-adversarial']) : undefined,
      robustbench: a.robustbench !== undefined ? String(a.robustbench) : undefined,
      latency: a.latency ? { batch: Number(a['latency-batch']), threads: Number(a.threads) } : undefined,
      normalize: a.mean !== undefined || a.std !== undefined ? { mean: parseChannels('mean', a.mean), std: parseChannels('std', a.std) } : undefined,
    });
    if (jsonTo) writeFileAtomic(jsonTo, JSON.stringify(report, null, 2));
    if (jsonStdout) printJson(report);
    else process.stdout.write(renderVerify(report) + (jsonTo ? `  report: ${jsonTo}\n` : ''));
    for (const w of report.warnings) process.stderr.write(`warning: ${w}\n`);
  },
};

/** The readable form of a verify report. */
export function renderVerify(r: VerifyReport): string {
  const rows: (string | number)[][] = [];
  const ips = (v: number): string => v.toFixed(0);
  rows.push(['benign', pct(r.benign.acc, 2), `${r.benign.correct}/${r.data.n}`, ips(r.benign.images_per_second), r.benign.seconds.toFixed(1)]);
  if (r.pgd) {
    const c = r.pgd.settings;
    rows.push([`PGD-${c.steps} (${c.norm} ε ${+c.eps.toFixed(4)}, step ${+c.alpha.toFixed(4)}, ${c.restarts} restart${c.restarts > 1 ? 's' : ''})`, pct(r.pgd.acc, 2), `ORT≠tfjs ${pct(r.pgd.disagreement_rate, 2)}`, ips(r.pgd.images_per_second), r.pgd.seconds.toFixed(1)]);
  }
  if (r.square) rows.push([`Square (L∞ ε ${+r.square.settings.eps.toFixed(4)}, ${r.square.settings.queries} queries)`, pct(r.square.acc, 2), `${r.square.mean_queries.toFixed(0)} queries/img`, ips(r.square.images_per_second), r.square.seconds.toFixed(1)]);
  if (r.autoattack) {
    const aa = r.autoattack;
    const what = `AutoAttack ${aa.version} (${aa.norm === 'linf' ? 'L∞' : 'L2'} ε ${+aa.eps.toFixed(4)})`;
    rows.push([`${what}: ${AUTOATTACK_ATTACKS[aa.version].join(', ')}`, pct(aa.acc, 2), `ORT≠engine ${pct(aa.candidates ? aa.ort_engine_disagreements / aa.candidates : 0, 2)}`, ips(aa.images_per_second), aa.seconds.toFixed(1)]);
    for (const row of aa.per_attack) {
      rows.push([`  after ${row.attack}${row.attack === 'Square' ? `-${aa.settings.square.queries}` : ''}`, pct(row.acc_after, 2), row.skipped ? `skipped: ${row.skipped}` : `broke ${row.broken}`, '', row.seconds.toFixed(1)]);
    }
  }
  if (r.robust && r.robust.attacks.length > 1) rows.push([`robust to all (${r.robust.attacks.join(' + ')})`, pct(r.robust.acc, 2), '', '', '']);
  if (r.ibp) rows.push([`IBP verified (L∞ ε ${r.ibp.eps})`, pct(r.ibp.verified_acc, 2), `${r.ibp.verified}/${r.data.n}`, ips(r.ibp.images_per_second), r.ibp.seconds.toFixed(1)]);
  if (r.crown) rows.push([`${r.crown.alpha_steps ? 'α-' : ''}CROWN verified (L∞ ε ${r.crown.eps}; ${r.crown.relu_layers.crown} of ${r.crown.relu_layers.crown + r.crown.relu_layers.ibp} ReLU layers by CROWN)`, pct(r.crown.verified_acc, 2), `${r.crown.verified}/${r.data.n}`, ips(r.crown.images_per_second), r.crown.seconds.toFixed(1)]);
  if (r.smoothing) {
    const s = r.smoothing;
    for (const c of s.certified) rows.push([`smoothing σ ${s.settings.sigma}: certified at L2 radius ${c.radius}`, pct(c.acc, 2), '', '', '']);
    if (s.certified.length) rows[rows.length - s.certified.length]!.splice(2, 3, `abstain ${pct(s.abstain_rate, 1)}, n ${s.settings.n}`, ips(s.images_per_second), s.seconds.toFixed(1));
    if (s.predict) rows.push([`smoothing σ ${s.settings.sigma}: PREDICT`, pct(s.predict.acc, 2), `abstain ${pct(s.predict.abstain_rate, 1)}`, '', '']);
  }
  return (
    `${r.model.file}${r.model.quantized ? ' (int8 QDQ)' : ''}  sha256 ${r.model.sha256.slice(0, 16)}…  ${r.model.bytes} bytes\n` +
    `  data       ${r.data.spec}, ${r.data.n} test images [${r.data.image_shape}], ${r.data.classes} classes\n` +
    `  judged by  onnxruntime-node (${r.provider} provider)${r.engine ? `; ${r.autoattack ? 'attack' : 'PGD'} gradients: ${r.engine}` : ''}\n\n` +
    table(['metric', 'accuracy', 'detail', 'img/s', 'seconds'], rows) + '\n' +
    (r.cost ? `  cost       ${r.cost.macs.toLocaleString('en-US')} MACs per image, ${r.cost.params.toLocaleString('en-US')} parameters; ` +
      `onnxruntime batch 1 ${r.cost.latency.batch1.median_ms.toFixed(3)} ms (p90 ${r.cost.latency.batch1.p90_ms.toFixed(3)}), ` +
      `batch ${r.cost.latency.batchN.batch} ${r.cost.latency.batchN.images_per_second.toFixed(0)} img/s\n` : '') +
    (r.autoattack?.saved_adversarial ? `  adversarial inputs  ${r.autoattack.saved_adversarial}\n` : '') +
    (r.robustbench ? `  RobustBench entry   ${r.robustbench}\n` : '') +
    `  (${r.seconds.toFixed(1)} s)\n`
  );
}
