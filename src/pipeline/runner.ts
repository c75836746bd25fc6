// Running a recipe: every stage is the onnx-hydra command itself in a child process (its own memory, and a
// crash or SIGKILL loses nothing but the stage's unfinished epoch), its artifact, JSON report and log in
// the run folder. run.json records finished stages; a second call resumes after the last one, and a
// stage that was cut off continues from its epoch checkpoints (--resume).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../util/fs.js';
import { UserError } from '../util/errors.js';
import { PARENT_PID_ENV } from '../util/lifetime.js';
import { sweepCombinations, variantName, type Recipe, type Stage } from './recipe.js';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'onnx-hydra.js');

export interface StageRecord {
  id: string;
  kind: Stage['kind'];
  variant: string;
  input: string;
  artifact: string;
  report: string;
  log: string;
  seconds: number;
  resumed: boolean;
  /** 'dense': the verification of the model that enters pruning, added by the runner for the report's deltas */
  role?: 'dense';
}

export interface RunState {
  recipe: string;
  hash: string;
  started: string;
  finished?: string;
  stages: Record<string, StageRecord>;
}

const flagsOf = (o: Record<string, string | number | boolean>): string[] =>
  Object.entries(o).flatMap(([k, v]) => (typeof v === 'boolean' ? (v ? [`--${k}`] : [`--no-${k}`]) : [`--${k}`, String(v)]));

/** Run a child onnx-hydra command; its output goes to the log file, its stderr also (prefixed) to ours. */
function runChild(args: string[], logFile: string, tag: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const log = fs.openSync(logFile, 'a');
    fs.writeSync(log, `$ onnx-hydra ${args.join(' ')}\n`);
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HYDRA_PROGRESS_SECONDS: process.env.HYDRA_PROGRESS_SECONDS ?? '15', [PARENT_PID_ENV]: String(process.pid) } });
    // (the commands' own summaries go to the log; their JSON reports are files next to the artifacts)
    child.stdout.on('data', (b: Buffer) => fs.writeSync(log, b));
    child.stderr.on('data', (b: Buffer) => {
      fs.writeSync(log, b);
      for (const line of b.toString().split('\n').filter(Boolean)) process.stderr.write(`[${tag}] ${line}\n`);
    });
    child.on('error', (e) => reject(e));
    child.on('close', (code, signal) => {
      fs.closeSync(log);
      if (code === 0) resolve();
      else {
        const last = fs.readFileSync(logFile, 'utf8').trim().split('\n').filter((l) => /error/i.test(l)).pop();
        reject(new UserError(`stage ${tag} failed (${signal ?? `exit ${code}`})${last ? `: ${last.replace(/^onnx-hydra: (error: )?/, '')}` : ''}; log: ${logFile}`));
      }
    });
  });
}

export async function runRecipe(r: Recipe, recipeFile: string, outDir: string, o: { restart?: boolean } = {}): Promise<RunState> {
  fs.mkdirSync(outDir, { recursive: true });
  const stateFile = path.join(outDir, 'run.json');
  // run.json stores paths relative to the run folder, so a run resumes from any working directory (and
  // after the folder moves); in memory they are absolute. (Files of earlier versions held paths relative
  // to the working directory of their run: those still resolve when started from there.)
  const FILE_KEYS = ['input', 'artifact', 'report', 'log'] as const;
  const absolute = (p: string): string => {
    if (path.isAbsolute(p)) return p;
    const inRun = path.resolve(outDir, p);
    return fs.existsSync(inRun) || !fs.existsSync(p) ? inRun : path.resolve(p);
  };
  let state: RunState | undefined = !o.restart && fs.existsSync(stateFile) ? (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as RunState) : undefined;
  for (const rec of Object.values(state?.stages ?? {})) for (const k of FILE_KEYS) rec[k] = absolute(rec[k]);
  if (state && state.hash !== r.hash) {
    throw new UserError(`${outDir} holds a run of a different recipe (or this recipe changed since): choose another --out, or pass --restart to start over there`);
  }
  state ??= { recipe: recipeFile, hash: r.hash, started: new Date().toISOString(), stages: {} };
  const save = (): void => {
    const stages = Object.fromEntries(Object.entries(state!.stages).map(([id, rec]) => [id, { ...rec, ...Object.fromEntries(FILE_KEYS.map((k) => [k, path.relative(outDir, rec[k])])) }]));
    writeFileAtomic(stateFile, JSON.stringify({ ...state, stages }, null, 2));
  };
  save();
  writeFileAtomic(path.join(outDir, 'recipe.json'), JSON.stringify(r, null, 2));
  if (!fs.existsSync(r.model)) throw new UserError(`recipe model '${r.model}' not found (paths are relative to the current folder)`);
  const common = (seed: number): string[] => ['--data', r.data, '--seed', String(seed), ...(r.backend ? ['--backend', r.backend] : [])];
  const firstPrune = r.stages.findIndex((s) => s.kind === 'prune');
  const shared = r.sweep ? r.stages.slice(0, firstPrune) : r.stages;
  const perVariant = r.sweep ? r.stages.slice(firstPrune) : [];

  // The report shows what pruning and quantization cost, so the model that enters pruning is verified with
  // the same settings as the files after it (those of the first verify stage after prune), unless the recipe
  // verifies it itself right before pruning.
  const verifyAfterPrune = r.stages.slice(firstPrune + 1).find((s) => s.kind === 'verify') ?? r.stages.find((s) => s.kind === 'verify');
  const needsDense = firstPrune >= 0 && verifyAfterPrune !== undefined && r.stages[firstPrune - 1]?.kind !== 'verify';
  const verifyArgs = (model: string, opts: Record<string, string | number | boolean>, json: string, seed = r.seed): string[] =>
    ['verify', model, ...common(seed), ...flagsOf({ latency: true, ...opts }), '--json', json];
  const denseVerify = async (model: string): Promise<void> => {
    if (!needsDense) return;
    const id = 'dense-verify';
    const artifact = path.join(outDir, `${id}.json`);
    const done = state!.stages[id];
    if (done && fs.existsSync(done.artifact)) {
      process.stderr.write(`[${id}] done earlier: ${done.artifact}\n`);
      return;
    }
    const t0 = performance.now();
    const norm = model === r.model && (r.mean || r.std) ? { ...(r.mean ? { mean: r.mean } : {}), ...(r.std ? { std: r.std } : {}) } : {};
    const args = verifyArgs(model, { ...verifyAfterPrune!.options, ...norm }, artifact);
    process.stderr.write(`[${id}] running: onnx-hydra ${args.join(' ')}\n`);
    const log = path.join(outDir, `${id}.log`);
    await runChild(args, log, id);
    state!.stages[id] = { id, kind: 'verify', variant: '', input: model, artifact, report: artifact, log, seconds: (performance.now() - t0) / 1000, resumed: false, role: 'dense' };
    save();
  };

  const runStages = async (stages: Stage[], startIndex: number, input: string, dir: string, variant: string, extra: Record<string, string | number>): Promise<string> => {
    let current = input;
    let lastModel = input;
    // a sweep over `seed` seeds every stage of the variant; other sweep keys are prune options
    const { seed: variantSeed, ...pruneExtra } = extra;
    const seed = variantSeed === undefined ? r.seed : Number(variantSeed);
    for (let j = 0; j < stages.length; j++) {
      const s = stages[j]!;
      if (s.kind === 'prune' && !variant) await denseVerify(current);
      const n = String(startIndex + j + 1).padStart(2, '0');
      const id = `${variant ? `${variant}/` : ''}${n}-${s.kind}`;
      const base = path.join(dir, `${n}-${s.kind}`);
      const artifact = s.kind === 'verify' ? `${base}.json` : `${base}.onnx`;
      const report = s.kind === 'verify' ? artifact : `${artifact}.report.json`;
      const done = state!.stages[id];
      if (done && fs.existsSync(done.artifact) && fs.existsSync(done.report)) {
        process.stderr.write(`[${id}] done earlier: ${done.artifact}\n`);
        if (s.kind !== 'verify') current = lastModel = done.artifact;
        continue;
      }
      fs.mkdirSync(dir, { recursive: true });
      const t0 = performance.now();
      // the recipe's normalisation goes into the first stage's model; its output carries it onward
      const norm = current === r.model && (r.mean || r.std) ? { ...(r.mean ? { mean: r.mean } : {}), ...(r.std ? { std: r.std } : {}) } : {};
      const opts = { ...s.options, ...(s.kind === 'prune' ? pruneExtra : {}), ...norm };
      const ckpt = `${artifact}.ckpt`;
      const resumed = (s.kind === 'pretrain' || s.kind === 'prune') && fs.existsSync(ckpt);
      let args: string[];
      if (s.kind === 'pretrain') args = ['train', current, ...common(seed), ...flagsOf(opts), '--out', artifact, ...(resumed ? ['--resume'] : [])];
      else if (s.kind === 'prune') args = ['prune', current, ...common(seed), ...flagsOf(opts), '--out', artifact, ...(resumed ? ['--resume'] : [])];
      else if (s.kind === 'quantize') args = ['quantize', current, '--data', r.data, ...flagsOf(opts), '--out', artifact];
      else args = verifyArgs(lastModel, opts, artifact, seed);
      process.stderr.write(`[${id}] ${resumed ? 'resuming' : 'running'}: onnx-hydra ${args.join(' ')}\n`);
      await runChild(args, `${base}.log`, id);
      state!.stages[id] = { id, kind: s.kind, variant, input: s.kind === 'verify' ? lastModel : current, artifact, report, log: `${base}.log`, seconds: (performance.now() - t0) / 1000, resumed };
      save();
      if (s.kind !== 'verify') current = lastModel = artifact;
    }
    return current;
  };

  const after = await runStages(shared, 0, r.model, outDir, '', {});
  if (r.sweep) {
    await denseVerify(after);
    for (const c of sweepCombinations(r)) {
      const v = variantName(c);
      await runStages(perVariant, firstPrune, after, path.join(outDir, v), v, c);
    }
  }
  state.finished = new Date().toISOString();
  save();
  return state;
}
