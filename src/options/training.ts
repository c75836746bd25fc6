// Option schemas shared by the commands that train or attack (engine, data, objective, optimizer,
// schedule) and their parsing; recipes validate their stages against the same schemas.
import path from 'node:path';
import type { Argv } from 'yargs';
import { BACKENDS, type BackendChoice } from '../engine/select.js';
import { OBJECTIVES, DEFAULT_OBJECTIVE, type ObjectiveConfig, type ObjectiveKind } from '../train/objectives.js';
import type { OptimizerConfig, ScheduleConfig } from '../train/optim.js';
import type { TrainConfig } from '../train/trainer.js';
import { UserError } from '../util/errors.js';

export function withBackend<T>(y: Argv<T>) {
  return y.option('backend', {
    type: 'string', default: 'auto', choices: BACKENDS as unknown as string[],
    describe: 'engine: auto = tfjs-node-gpu with a GPU, else tfjs-node, else ort (compiled onnxruntime graphs), else cpu',
  });
}

/** --mean/--std: normalisation put in front of the model (inputs stay pixels in [0,1]). */
export function withNormalization<T>(y: Argv<T>) {
  return y
    .option('mean', { type: 'string', describe: 'the model expects (x − mean)/std: per-channel means, e.g. 0.4914,0.4822,0.4465; put in front of the model (its exports include it), so inputs and ε stay in [0,1] pixels' })
    .option('std', { type: 'string', describe: 'per-channel standard deviations (with --mean)' });
}

export function withObjective<T>(y: Argv<T>, def: ObjectiveKind) {
  return y
    .option('objective', { type: 'string', default: def, choices: OBJECTIVES as unknown as string[], describe: 'training objective' })
    .option('eps', { type: 'number', default: DEFAULT_OBJECTIVE.eps, describe: 'perturbation radius (pixels in [0,1])' })
    .option('alpha', { type: 'number', describe: 'attack step size (default 2.5·eps/steps)' })
    .option('steps', { type: 'number', default: DEFAULT_OBJECTIVE.steps, describe: 'attack steps (pgd, trades, mixtrain)' })
    .option('norm', { type: 'string', default: 'linf', choices: ['linf', 'l2'], describe: 'threat model' })
    .option('beta', { type: 'number', default: DEFAULT_OBJECTIVE.beta, describe: 'TRADES trade-off β' })
    .option('sigma', { type: 'number', default: DEFAULT_OBJECTIVE.sigma, describe: 'Gaussian noise σ (smooth)' })
    .option('eps-warmup', { type: 'number', default: DEFAULT_OBJECTIVE.epsWarmup, describe: 'ibp/crown-ibp/mixtrain: fraction of training at ε = 0' })
    .option('eps-ramp', { type: 'number', default: DEFAULT_OBJECTIVE.epsRamp, describe: 'ibp/crown-ibp/mixtrain: fraction of training over which ε ramps to --eps' })
    .option('kappa', { type: 'string', default: `${DEFAULT_OBJECTIVE.kappaStart},${DEFAULT_OBJECTIVE.kappaEnd}`, describe: 'ibp/crown-ibp: weight κ of the natural loss, start,end over the ramp' })
    .option('crown-beta', { type: 'string', default: `${DEFAULT_OBJECTIVE.crownBetaStart},${DEFAULT_OBJECTIVE.crownBetaEnd}`, describe: 'crown-ibp: weight of the CROWN bound, start,end over the ramp' })
    .option('mix-sample', { type: 'number', default: DEFAULT_OBJECTIVE.mixSample, describe: 'mixtrain: fraction of each batch whose interval bound is trained' })
    .option('mix-weight', { type: 'number', default: DEFAULT_OBJECTIVE.mixWeight, describe: 'mixtrain: weight λ of the bound loss' });
}

function pair(v: string, flag: string): [number, number] {
  const p = String(v).split(',').map(Number);
  if (p.length !== 2 || p.some((x) => !Number.isFinite(x))) throw new UserError(`--${flag} expects start,end (e.g. 1,0), got '${v}'`);
  return [p[0]!, p[1]!];
}

export function objectiveFromArgs(a: Record<string, unknown>): ObjectiveConfig {
  const steps = Number(a.steps);
  const eps = Number(a.eps);
  const [kappaStart, kappaEnd] = pair(String(a.kappa), 'kappa');
  const [crownBetaStart, crownBetaEnd] = pair(String(a['crown-beta']), 'crown-beta');
  return {
    ...DEFAULT_OBJECTIVE,
    kind: a.objective as ObjectiveKind,
    eps,
    steps,
    alpha: a.alpha !== undefined ? Number(a.alpha) : steps > 0 ? (2.5 * eps) / steps : eps,
    norm: a.norm as 'linf' | 'l2',
    beta: Number(a.beta),
    sigma: Number(a.sigma),
    epsWarmup: Number(a['eps-warmup']),
    epsRamp: Number(a['eps-ramp']),
    kappaStart, kappaEnd, crownBetaStart, crownBetaEnd,
    mixSample: Number(a['mix-sample']),
    mixWeight: Number(a['mix-weight']),
  };
}

export function withTraining<T>(y: Argv<T>, defaults: { epochs?: number; lr: number }) {
  const y2 = defaults.epochs !== undefined ? y.option('epochs', { type: 'number', default: defaults.epochs }) : y;
  return y2
    .option('data', { type: 'string', default: 'fashion-mnist', describe: 'fashion-mnist (embedded) | fashion-mnist:<dir> | mnist:<dir> | idx:<images.gz>,<labels.gz>[;<test images>,<test labels>]' })
    .option('batch-size', { type: 'number', default: 128 })
    .option('lr', { type: 'number', default: defaults.lr, describe: 'learning rate' })
    .option('optimizer', { type: 'string', default: 'sgd', choices: ['sgd', 'adam'] })
    .option('momentum', { type: 'number', default: 0.9 })
    .option('nesterov', { type: 'boolean', default: false })
    .option('weight-decay', { type: 'number', default: 1e-4 })
    .option('schedule', { type: 'string', default: 'cosine', choices: ['cosine', 'step', 'linear', 'constant'] })
    .option('warmup', { type: 'number', default: 0, describe: 'epochs of linear learning-rate warm-up' })
    .option('milestones', { type: 'string', describe: 'step schedule: epochs where the lr is multiplied by --gamma, e.g. 50,75' })
    .option('gamma', { type: 'number', default: 0.1 })
    .option('augment', { type: 'boolean', default: false, describe: 'CIFAR-style augmentation: random crop (--crop-pad) and horizontal flip' })
    .option('crop-pad', { type: 'number', default: 4 })
    .option('train-limit', { type: 'number', describe: 'train on a seeded random subset of this many images' })
    .option('eval-limit', { type: 'number', default: 2000, describe: 'test images for the accuracy printed after each epoch (0: none)' })
    .option('epoch-pgd', { type: 'number', default: 0, describe: 'after each epoch, PGD-10 accuracy (ε = --eps, or 0.1 when it is 0) on this many test images: a robustness training curve (0: none)' })
    .option('seed', { type: 'number', default: 0 })
    .option('checkpoint-dir', { type: 'string', describe: 'per-epoch checkpoints (default: <out>.ckpt)' })
    .option('resume', { type: 'boolean', default: false, describe: 'continue from the checkpoint in --checkpoint-dir' });
}

/** --epoch-pgd: the per-epoch robustness measurement of TrainConfig.epochPgd */
export function epochPgdFromArgs(a: Record<string, unknown>): TrainConfig['epochPgd'] {
  const limit = Number(a['epoch-pgd'] ?? 0);
  if (!Number.isInteger(limit) || limit < 0) throw new UserError(`--epoch-pgd must be an integer ≥ 0, got ${a['epoch-pgd']}`);
  if (!limit) return undefined;
  const eps = Number(a.eps) > 0 ? Number(a.eps) : 0.1;
  return { limit, pgd: { eps, alpha: (2.5 * eps) / 10, steps: 10, norm: (a.norm as 'linf' | 'l2') ?? 'linf', randomStart: true } };
}

export function optimizerFromArgs(a: Record<string, unknown>): { optimizer: OptimizerConfig; schedule: ScheduleConfig } {
  const milestones = a.milestones ? String(a.milestones).split(',').map(Number) : [];
  if (milestones.some((m) => !Number.isFinite(m))) throw new UserError(`--milestones expects epochs like 50,75, got '${a.milestones}'`);
  return {
    optimizer: {
      name: a.optimizer as 'sgd' | 'adam', lr: Number(a.lr), momentum: Number(a.momentum),
      weightDecay: Number(a['weight-decay']), nesterov: !!a.nesterov,
    },
    schedule: { kind: a.schedule as ScheduleConfig['kind'], warmup: Number(a.warmup), milestones, gamma: Number(a.gamma) },
  };
}

/** `models/x.onnx` → `models/x.<suffix>.onnx` */
export function derivedPath(model: string, suffix: string): string {
  const p = path.parse(model);
  return path.join(p.dir, `${p.name}.${suffix}.onnx`);
}
