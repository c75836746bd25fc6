// `onnx-hydra train`: (robust) training of an ONNX classifier — HYDRA's pretrain phase.
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { trainOptions } from '../options/commands.js';
import { loadModel, saveModel } from '../onnx/model.js';
import { TfGraph } from '../graph/graph.js';
import { selectEngine, type BackendChoice } from '../engine/select.js';
import { Net } from '../engine/net.js';
import { checkDataFitsModel, loadData } from '../data/index.js';
import { makeObjective } from '../train/objectives.js';
import { trainLoop } from '../train/trainer.js';
import { evaluateRobustness } from '../verify/robustness.js';
import { compareWithOrt } from '../verify/equivalence.js';
import { writeFileAtomic } from '../util/fs.js';
import { UserError } from '../util/errors.js';
import { parseInputShapes, pct, printJson, table } from './common.js';
import { derivedPath, epochPgdFromArgs, objectiveFromArgs, optimizerFromArgs } from '../options/training.js';
import { parseChannels, withInputNormalization } from '../onnx/normalize-input.js';

type Args = Record<string, unknown> & { model: string; json: boolean; out?: string };

export const trainCommand: CommandModule<object, Args> = {
  command: 'train <model>',
  describe: 'train an ONNX classifier (natural or robust objective) and export the trained ONNX model',
  builder: (y) => trainOptions(y) as never,
  handler: async (a) => {
    const t0 = performance.now();
    const quiet = !!a.quiet || !!a.json;
    const log = (s: string): void => void (!a.quiet && process.stderr.write(`${s}\n`));
    for (const [flag, min] of [['epochs', 0], ['batch-size', 1]] as const) {
      const v = Number(a[flag]);
      if (!Number.isInteger(v) || v < min) throw new UserError(`--${flag} must be an integer ≥ ${min}, got ${a[flag]}`);
    }
    if (!(Number(a.lr) > 0)) throw new UserError(`--lr must be > 0, got ${a.lr}`);
    const objCfg = objectiveFromArgs(a);
    const objective = makeObjective(objCfg);
    const { optimizer, schedule } = optimizerFromArgs(a);
    const out = a.out ?? derivedPath(a.model, objCfg.kind);
    if (path.resolve(out) === path.resolve(a.model)) throw new UserError(`--out '${out}' would overwrite the input model; choose another file`);
    const data = loadData(String(a.data));
    const model = withInputNormalization(loadModel(a.model), parseChannels('mean', a.mean), parseChannels('std', a.std));
    const engine = selectEngine(a.backend as BackendChoice);
    log(`engine: ${engine.description}`);
    const graph = TfGraph.fromModel(model, { inputShapes: parseInputShapes(a['input-shape'] as string[] | undefined) });
    const net = new Net(graph, engine);
    checkDataFitsModel(data.train, graph.inputs[0]!.shape, net.classes);
    const vars = new Map(graph.trainableNames().map((n) => [n, graph.variables.get(n)!]));
    if (!vars.size) throw new UserError(`${a.model}: no trainable parameters found (Conv/Gemm/MatMul weights, BatchNormalization scale/bias)`);
    log(`objective: ${objective.describe()}`);
    const checkpointDir = (a['checkpoint-dir'] as string | undefined) ?? `${out}.ckpt`;
    const res = await trainLoop(net, data, objective, { vars }, {
      epochs: Number(a.epochs), batchSize: Number(a['batch-size']), optimizer, schedule, seed: Number(a.seed),
      augment: { cropPad: a.augment ? Number(a['crop-pad']) : 0, flip: !!a.augment },
      trainLimit: a['train-limit'] !== undefined ? Number(a['train-limit']) : undefined,
      evalLimit: Number(a['eval-limit']), epochPgd: epochPgdFromArgs(a), checkpointDir, resume: !!a.resume, label: `train:${objCfg.kind}`, quiet,
    });
    const bytes = saveModel(graph.exportModel(), out);
    log(`wrote ${out} (${(bytes / 1024).toFixed(1)} KiB); checkpoints in ${checkpointDir}`);

    const evalEps = a['eval-eps'] !== undefined ? Number(a['eval-eps']) : objCfg.eps > 0 ? objCfg.eps : 0.1;
    const evalSteps = Number(a['eval-steps']);
    const limit = a['final-eval-limit'] !== undefined ? Number(a['final-eval-limit']) : undefined;
    const rob = evaluateRobustness(net, data.test, {
      limit, seed: Number(a.seed), quiet,
      pgd: evalSteps > 0 ? { eps: evalEps, alpha: (2.5 * evalEps) / evalSteps, steps: evalSteps, norm: objCfg.norm, randomStart: true, restarts: Number(a['eval-restarts']) } : undefined,
    });
    const frozen = net.frozen();
    const agreement = await compareWithOrt(out, data.test.x, data.test.y, data.test.shape, (x, n) => frozen.logits(x, n), { limit });
    const report = {
      command: 'train',
      model: a.model,
      out,
      engine: net.describe(),
      data: { spec: data.spec, train: data.train.length, test: data.test.length },
      objective: { ...objCfg, description: objective.describe() },
      optimizer, schedule,
      epochs: Number(a.epochs),
      batch_size: Number(a['batch-size']),
      resumed_from_epoch: res.resumedFrom !== undefined ? res.resumedFrom + 1 : undefined,
      history: res.history,
      final: { n: rob.n, benign_acc: rob.benign_acc, pgd_acc: rob.pgd_acc, pgd: rob.pgd },
      export: { file: out, bytes, onnxruntime: agreement },
      checkpoint_dir: checkpointDir,
      seconds: (performance.now() - t0) / 1000,
    };
    writeFileAtomic(`${out}.report.json`, JSON.stringify(report, null, 2));
    if (a.json) printJson(report);
    else {
      const rows = res.history.map((h) => [h.epoch, h.lr.toPrecision(3), h.loss.toFixed(4), pct(h.train_acc, 2), h.test_acc !== undefined ? pct(h.test_acc, 2) : '-', h.robust_acc !== undefined ? pct(h.robust_acc, 2) : '-', h.images_per_second.toFixed(0)]);
      process.stdout.write(
        `${a.model} → ${out}\n  engine     ${report.engine}\n  objective  ${objective.describe()}\n\n` +
        table(['epoch', 'lr', 'loss', 'train acc', 'test acc', 'PGD-10 acc', 'img/s'], rows) + '\n\n' +
        `  benign accuracy  ${pct(rob.benign_acc, 2)}  (${rob.n} test images)\n` +
        (rob.pgd_acc !== undefined ? `  PGD-${evalSteps} accuracy  ${pct(rob.pgd_acc, 2)}  (${objCfg.norm} ε ${evalEps}, step ${(2.5 * evalEps / evalSteps).toPrecision(3)}, random start)\n` : '') +
        `  onnxruntime on the export: ${pct(agreement.prediction_agreement, 2)} same predictions, accuracy ${pct(agreement.ort_accuracy, 2)}, max |Δlogit| ${agreement.max_abs_logit_diff.toExponential(2)}\n` +
        `  report: ${out}.report.json   (${report.seconds.toFixed(0)} s)\n`,
      );
    }
    net.dispose();
  },
};
