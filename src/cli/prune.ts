// `onnx-hydra prune`: HYDRA / Adv-LWM / Adv-ADMM pruning with robust fine-tuning, exported as ONNX: single
// weights (exact zeros in the file), or whole channels (--structure channel: the file shrinks).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { CommandModule } from 'yargs';
import { pruneOptions } from '../options/commands.js';
import { loadModel, saveModel } from '../onnx/model.js';
import { TfGraph } from '../graph/graph.js';
import { selectEngine, type BackendChoice } from '../engine/select.js';
import { Net } from '../engine/net.js';
import { checkDataFitsModel, loadData } from '../data/index.js';
import { makeObjective } from '../train/objectives.js';
import type { TrainConfig } from '../train/trainer.js';
import { pruneNet, type PruneMethod, type PruneStructure } from '../prune/prune.js';
import { checkChannelPlan, planChannels, pruneChannels, unshareInitializers, type ChannelPlan } from '../prune/channel-prune.js';
import { maskChannels, shrinkChannels } from '../prune/shrink.js';
import { summarize } from '../graph/analyze.js';
import type { OnnxModel } from '../onnx/model.js';
import type { Dataset } from '../data/index.js';
import { sparsityOf } from '../prune/masks.js';
import { calibrationSet, quantizeInt8 } from '../quant/qdq.js';
import { outputDifference, toSparseIfLoadable } from '../runtime/ort.js';
import { evaluateRobustness } from '../verify/robustness.js';
import { compareWithOrt } from '../verify/equivalence.js';
import { writeFileAtomic } from '../util/fs.js';
import { UserError } from '../util/errors.js';
import { fmtInt, parseInputShapes, pct, printJson, table } from './common.js';
import { derivedPath, epochPgdFromArgs, objectiveFromArgs, optimizerFromArgs } from '../options/training.js';
import { parseChannels, withInputNormalization } from '../onnx/normalize-input.js';

type Args = Record<string, unknown> & { model: string; json: boolean; out?: string };

/** Largest |logit difference| of two models on onnxruntime over the first `n` test images, and the largest |logit|. */
async function maxLogitDiff(a: OnnxModel, b: OnnxModel, test: Dataset, n: number): Promise<{ n: number; max_abs_logit_diff: number; max_abs_logit: number }> {
  const m = Math.min(n, test.length);
  const per = test.shape[0] * test.shape[1] * test.shape[2];
  const { diff, scale } = await outputDifference(a, b, { data: test.x.subarray(0, m * per), shape: [m, ...test.shape] });
  return { n: m, max_abs_logit_diff: diff, max_abs_logit: scale };
}

interface Cost { macs?: number; params: number; bytes: number }
/** The prune report's `channels` section (--structure channel). */
interface ChannelReport {
  allocation: string;
  groups: { id: number; producers: string[]; channels: number; kept: number; removed: number; kept_channels: number[] }[];
  dense: { producers: string[]; channels: number; reason: string }[];
  /** channels of the prunable groups, how many were removed, and the fraction */
  channels: number;
  removed: number;
  sparsity: number;
  masked_vs_shrunk: { n: number; max_abs_logit_diff: number; max_abs_logit: number; tolerance: number };
  masked_file?: string;
  cost?: { dense: Cost; shrunk: Cost; dense_over_shrunk: { macs?: number; params?: number; bytes?: number } };
}

/** The text report's channel part: kept channels per group, dense groups and why, costs dense → shrunk. */
function channelSummary(c: ChannelReport): string {
  const x = (v?: number): string => (v === undefined ? '-' : `${v.toFixed(2)}× fewer`);
  const n = (v?: number): string => (v === undefined ? '-' : fmtInt(v));
  return (
    table(['group', 'producers', 'channels', 'kept', 'removed'], [
      ...c.groups.map((g) => [g.id, g.producers.join(', '), g.channels, g.kept, pct(g.removed / g.channels, 1)]),
      ['all', '', c.channels, c.channels - c.removed, pct(c.channels ? c.removed / c.channels : 0, 1)],
    ]) + '\n' +
    c.dense.map((d) => `  dense: ${d.producers.join(', ')} (${d.channels} channels): ${d.reason}\n`).join('') + '\n' +
    table(['', 'dense', 'shrunk', 'dense / shrunk'], [
      ['MACs / image', n(c.cost?.dense.macs), n(c.cost?.shrunk.macs), x(c.cost?.dense_over_shrunk.macs)],
      ['parameters', n(c.cost?.dense.params), n(c.cost?.shrunk.params), x(c.cost?.dense_over_shrunk.params)],
      ['bytes', n(c.cost?.dense.bytes), n(c.cost?.shrunk.bytes), x(c.cost?.dense_over_shrunk.bytes)],
    ]) + '\n' +
    `  shrunk vs masked network on onnxruntime: max |Δlogit| ${c.masked_vs_shrunk.max_abs_logit_diff.toExponential(2)} on ${c.masked_vs_shrunk.n} test images (tolerance ${c.masked_vs_shrunk.tolerance.toExponential(2)})\n` +
    (c.masked_file ? `  masked network (same shapes as the input): ${c.masked_file}\n` : '') + '\n'
  );
}

/** MACs per image, parameters and bytes of a model file (src/graph's summary). */
function costOf(file: string, inputShapes?: Record<string, number[]>): Cost {
  const s = summarize(loadModel(file), { inputShapes });
  return { macs: s.macs, params: s.parameters.total, bytes: s.bytes };
}

export const pruneCommand: CommandModule<object, Args> = {
  command: 'prune <model>',
  describe: 'prune a (robustly trained) ONNX classifier with HYDRA, Adv-LWM or Adv-ADMM, fine-tune, export',
  builder: (y) => pruneOptions(y) as never,
  handler: async (a) => {
    const t0 = performance.now();
    const quiet = !!a.quiet || !!a.json;
    const log = (s: string): void => void (!a.quiet && process.stderr.write(`${s}\n`));
    const sparsity = Number(a.sparsity);
    const structure = a.structure as PruneStructure;
    if (!(sparsity > 0 && sparsity < 1)) throw new UserError(`--sparsity must be in (0, 1) (the fraction of ${structure === 'channel' ? 'each group\'s channels' : 'weights'} removed), got ${a.sparsity}`);
    for (const [flag, min] of [['prune-epochs', 0], ['finetune-epochs', 0], ['batch-size', 1]] as const) {
      const v = Number(a[flag]);
      if (!Number.isInteger(v) || v < min) throw new UserError(`--${flag} must be an integer ≥ ${min}, got ${a[flag]}`);
    }
    for (const flag of ['lr', 'finetune-lr']) if (!(Number(a[flag]) > 0)) throw new UserError(`--${flag} must be > 0, got ${a[flag]}`);
    const method = a.method as PruneMethod;
    if (structure === 'filter' && method !== 'admm') throw new UserError(`--structure filter is ADMM's per-layer filter projection (--method admm); use --structure channel with --method ${method}`);
    if (structure === 'channel' && a['sparse-format'] !== 'dense') throw new UserError('--sparse-format sparse-initializer stores the zeros of unstructured pruning; --structure channel removes the channels from the file instead');
    if (a['keep-shape'] && structure !== 'channel') throw new UserError('--keep-shape writes the masked network of --structure channel; unstructured pruning keeps every shape anyway');
    const objCfg = objectiveFromArgs(a);
    const objective = makeObjective(objCfg);
    const { optimizer, schedule } = optimizerFromArgs(a);
    const out = a.out ?? derivedPath(a.model, structure === 'channel' ? `${method}-channel-${sparsity}` : `${method}-${sparsity}`);
    if (path.resolve(out) === path.resolve(a.model)) throw new UserError(`--out '${out}' would overwrite the input model; choose another file`);
    const inputShapes = parseInputShapes(a['input-shape'] as string[] | undefined);
    const normalized = withInputNormalization(loadModel(a.model), parseChannels('mean', a.mean), parseChannels('std', a.std));
    // channel masks act on one layer's parameters: initializers shared between nodes get a copy each
    const model = structure === 'channel' ? unshareInitializers(normalized) : normalized;
    const graph = TfGraph.fromModel(model, { inputShapes });
    if (!graph.prunableNames().length) throw new UserError(`${a.model}: no prunable layer (Conv/ConvTranspose/Gemm/MatMul weights)`);
    let plan: ChannelPlan | undefined;
    if (structure === 'channel') {
      plan = planChannels(graph);
      checkChannelPlan(plan, sparsity, a.model);
    }
    const data = loadData(String(a.data));
    const engine = selectEngine(a.backend as BackendChoice);
    const net = new Net(graph, engine);
    checkDataFitsModel(data.train, graph.inputs[0]!.shape, net.classes);
    log(`engine: ${net.describe()}`);
    log(`objective: ${objective.describe()}; ${method} to ${pct(sparsity, 1)} ${structure === 'channel' ? 'of the channels of every group' : 'sparsity'}`);
    const checkpointDir = (a['checkpoint-dir'] as string | undefined) ?? `${out}.ckpt`;
    const base = {
      batchSize: Number(a['batch-size']), schedule, seed: Number(a.seed),
      augment: { cropPad: a.augment ? Number(a['crop-pad']) : 0, flip: !!a.augment },
      trainLimit: a['train-limit'] !== undefined ? Number(a['train-limit']) : undefined,
      evalLimit: Number(a['eval-limit']), epochPgd: epochPgdFromArgs(a), resume: !!a.resume, quiet,
    };
    const phase1: TrainConfig = { ...base, epochs: Number(a['prune-epochs']), optimizer, label: `${method}:${method === 'admm' ? 'admm' : 'scores'}` };
    const phase2: TrainConfig = { ...base, epochs: Number(a['finetune-epochs']), optimizer: { ...optimizer, lr: Number(a['finetune-lr']) }, label: `${method}:finetune` };
    const config = {
      method, sparsity, allocation: a.allocation as 'layer' | 'global', scoreInit: a['score-init'] as 'scaled' | 'kaiming',
      rho: Number(a.rho), rhoGrowth: Number(a['rho-growth']), structure: structure === 'filter' ? ('filter' as const) : ('irregular' as const),
      prune: phase1, finetune: phase2, checkpointDir, resume: !!a.resume, quiet,
    };
    const channelRes = plan ? await pruneChannels(net, data, objective, plan, config) : undefined;
    const res = channelRes ?? (await pruneNet(net, data, objective, config));
    let exportedModel = graph.exportModel();
    let sparseFormat = String(a['sparse-format']);
    let sparseNote: string | undefined;
    let channels: ChannelReport | undefined;
    if (plan && channelRes) {
      // the masked network, then the channels physically removed; both must give the same logits
      const masked = maskChannels(exportedModel, plan.analysis, channelRes.kept);
      const shrunk = shrinkChannels(masked, plan.analysis, channelRes.kept, { inputShapes });
      const same = await maxLogitDiff(masked, shrunk, data.test, 64);
      const tolerance = 1e-4 * Math.max(1, same.max_abs_logit);
      if (!(same.max_abs_logit_diff <= tolerance)) {
        throw new Error(`the shrunk export differs from the masked network by ${same.max_abs_logit_diff.toExponential(2)} in the logits of ${same.n} test images (tolerance ${tolerance.toExponential(2)}); nothing written`);
      }
      exportedModel = shrunk;
      const maskedFile = a['keep-shape'] ? out.replace(/\.onnx$/, '') + '.masked.onnx' : undefined;
      if (maskedFile) saveModel(masked, maskedFile);
      const groups = plan.groups.map((pg) => {
        const kept = channelRes.kept[pg.index]!;
        return { id: pg.index, producers: pg.group.producers.map((p) => p.node), channels: pg.group.channels, kept: kept.length, removed: pg.group.channels - kept.length, kept_channels: kept };
      });
      const total = groups.reduce((p, g) => p + g.channels, 0);
      const removed = groups.reduce((p, g) => p + g.removed, 0);
      channels = {
        allocation: String(a.allocation), groups,
        dense: plan.dense.map((d) => ({ producers: d.producers, channels: d.channels, reason: d.reason })),
        channels: total, removed, sparsity: total ? removed / total : 0,
        masked_vs_shrunk: { ...same, tolerance },
        masked_file: maskedFile,
      };
    }
    if (sparseFormat === 'sparse-initializer') {
      const r = await toSparseIfLoadable(exportedModel, graph.prunableNames());
      if (r.ok) exportedModel = r.model;
      else {
        sparseFormat = 'dense';
        sparseNote = `onnxruntime-node did not load sparse initializers (${r.why}); kept dense`;
        log(`note: ${sparseNote}`);
      }
    }
    const bytes = saveModel(exportedModel, out);
    const fileBytes = fs.readFileSync(out);
    const gz = zlib.gzipSync(fileBytes, { level: 9 }).length;
    const origGz = zlib.gzipSync(fs.readFileSync(a.model), { level: 9 }).length;
    // unstructured: sparsity as written to the file (exact zeros), per prunable layer
    let sp: ReturnType<typeof sparsityOf> | undefined;
    if (!channels) {
      const exported = TfGraph.fromModel(loadModel(out), { inputShapes });
      const values = new Map(exported.prunableNames().map((n) => [n, exported.variables.get(n)!.dataSync() as Float32Array]));
      sp = sparsityOf(values, new Map([...exported.params].map(([k, v]) => [k, v.node])));
      exported.dispose();
    } else {
      const dense = costOf(a.model, inputShapes);
      const shrunk = costOf(out, inputShapes);
      const ratio = (x?: number, y?: number): number | undefined => (x !== undefined && y ? x / y : undefined);
      channels.cost = { dense, shrunk, dense_over_shrunk: { macs: ratio(dense.macs, shrunk.macs), params: ratio(dense.params, shrunk.params), bytes: ratio(dense.bytes, shrunk.bytes) } };
    }
    const evalEps = a['eval-eps'] !== undefined ? Number(a['eval-eps']) : objCfg.eps > 0 ? objCfg.eps : 0.1;
    const evalSteps = Number(a['eval-steps']);
    const limit = a['final-eval-limit'] !== undefined ? Number(a['final-eval-limit']) : undefined;
    const rob = evaluateRobustness(net, data.test, {
      limit, seed: Number(a.seed), quiet,
      pgd: evalSteps > 0 ? { eps: evalEps, alpha: (2.5 * evalEps) / evalSteps, steps: evalSteps, norm: objCfg.norm, randomStart: true, restarts: 1 } : undefined,
    });
    const frozen = net.frozen();
    const agreement = await compareWithOrt(out, data.test.x, data.test.y, data.test.shape, (x, n) => frozen.logits(x, n), { limit });
    let int8: Record<string, unknown> | undefined;
    if (a.quantize === 'int8') {
      const qFile = out.replace(/\.onnx$/, '') + '.int8.onnx';
      const cn = Math.min(Number(a['calibration-size']), data.train.length);
      const q = await quantizeInt8(loadModel(out), calibrationSet(data.train, cn), { calibration: a.calibration as 'minmax' | 'percentile', percentile: Number(a.percentile) });
      const qBytes = saveModel(q.model, qFile);
      const qa = await compareWithOrt(qFile, data.test.x, data.test.y, data.test.shape, (x, n) => frozen.logits(x, n), { limit });
      int8 = {
        file: qFile, bytes: qBytes, gzip_bytes: zlib.gzipSync(fs.readFileSync(qFile), { level: 9 }).length, calibration: a.calibration, calibration_images: cn,
        accuracy: qa.ort_accuracy, float_accuracy: agreement.ort_accuracy, agreement_with_float: qa.prediction_agreement, quantized: q.report,
      };
    }
    const report = {
      command: 'prune', model: a.model, out, engine: net.describe(),
      method, sparsity_target: sparsity, allocation: a.allocation, score_init: method === 'hydra' ? a['score-init'] : undefined,
      admm: method === 'admm' ? { rho: Number(a.rho), rho_growth: Number(a['rho-growth']) } : undefined,
      objective: { ...objCfg, description: objective.describe() },
      data: { spec: data.spec, train: base.trainLimit ?? data.train.length, test: data.test.length },
      phases: res.phases, resumed: res.resumed,
      structure,
      // unstructured: zeros per prunable layer of the file; channel: the fraction of the groups' channels removed
      sparsity: sp ?? { unit: 'channels', sparsity: channels!.sparsity },
      channels,
      final: { n: rob.n, benign_acc: rob.benign_acc, pgd_acc: rob.pgd_acc, pgd: rob.pgd },
      export: { file: out, format: sparseFormat, note: sparseNote, bytes, gzip_bytes: gz, original_gzip_bytes: origGz, onnxruntime: agreement },
      int8,
      checkpoint_dir: checkpointDir,
      seconds: (performance.now() - t0) / 1000,
    };
    writeFileAtomic(`${out}.report.json`, JSON.stringify(report, null, 2));
    if (a.json) printJson(report);
    else {
      const phaseRows = res.phases.flatMap((p) => p.history.map((h) => [p.name, h.epoch, h.lr.toPrecision(3), h.loss.toFixed(4), pct(h.train_acc, 2), h.test_acc !== undefined ? pct(h.test_acc, 2) : '-', h.robust_acc !== undefined ? pct(h.robust_acc, 2) : '-', h.images_per_second.toFixed(0)]));
      process.stdout.write(
        `${a.model} → ${out}\n  engine     ${report.engine}\n  objective  ${objective.describe()}\n  method     ${method}, ${pct(sparsity, 1)} of ${channels ? 'the channels of every group' : 'prunable weights'} removed (${a.allocation})\n\n` +
        (phaseRows.length ? table(['phase', 'epoch', 'lr', 'loss', 'train acc', 'test acc', 'PGD-10 acc', 'img/s'], phaseRows) + '\n\n' : '') +
        (sp ? table(['layer', 'params', 'zeros', 'sparsity'], [...sp.layers.map((l) => [l.node || l.name, l.params, l.zeros, pct(l.sparsity, 2)]), ['all prunable', sp.params, sp.zeros, pct(sp.sparsity, 2)]]) + '\n\n' : channelSummary(channels!)) +
        `  benign accuracy  ${pct(rob.benign_acc, 2)}  (${rob.n} test images)\n` +
        (rob.pgd_acc !== undefined ? `  PGD-${evalSteps} accuracy  ${pct(rob.pgd_acc, 2)}  (${objCfg.norm} ε ${evalEps})\n` : '') +
        `  file  ${bytes} bytes, ${gz} gzip-compressed (the input model: ${origGz} gzip-compressed)\n` +
        `  onnxruntime on the export: ${pct(agreement.prediction_agreement, 2)} same predictions, accuracy ${pct(agreement.ort_accuracy, 2)}\n` +
        (int8 ? `  int8 QDQ: ${int8.file} (${int8.bytes} bytes, ${int8.gzip_bytes} gzip-compressed), onnxruntime accuracy ${pct(int8.accuracy as number, 2)} (float ${pct(agreement.ort_accuracy, 2)}), ${pct(int8.agreement_with_float as number, 2)} same predictions as float\n` : '') +
        `  report: ${out}.report.json   (${report.seconds.toFixed(0)} s)\n`,
      );
    }
    net.dispose();
  },
};
