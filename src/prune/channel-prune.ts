// Channel (structured) pruning with HYDRA, Adv-LWM and Adv-ADMM. The unit is a channel of a coupled group
// (channels.ts): removing it zeroes every producer weight row and bias of the channel and its
// BatchNormalization scale and shift — the masked network of shrink.ts, which the export then shrinks.
//   hydra: one importance score per channel, initialised from the group's channel weight norms divided by
//          the group's largest norm; top-k per group through a straight-through estimator, scores trained
//          on the objective with the weights frozen; then fine-tuning with the mask fixed. While the scores
//          train, a channel's mask multiplies its consumers' input-weight slices, not its producers: the
//          network computes the same function (no consumer reads the channel), but a removed channel's
//          activation stays alive, so its score still gets a gradient and can come back. Masking the producers
//          made the channel exactly 0 before its ReLU, whose gradient there is 0: a removed channel's score
//          never moved again.
//   lwm:   the channels of largest weight norm of the (robustly pretrained) network; then fine-tuning.
//   admm:  Adv-ADMM whose projection keeps the k channels of each group with the largest weight norms of
//          the auxiliary variable; then hard pruning by the weights' channel norms, and fine-tuning.
import path from 'node:path';
import { tf } from '../tfjs/tf.js';
import type { TfGraph } from '../graph/graph.js';
import type { Net } from '../engine/net.js';
import type { DataSplits } from '../data/index.js';
import type { Objective } from '../train/objectives.js';
import { trainLoop } from '../train/trainer.js';
import { cloneModel, type OnnxModel } from '../onnx/model.js';
import { onnx, type TensorProto } from '../onnx/proto.js';
import type { HostTensor } from '../onnx/tensor.js';
import { UserError } from '../util/errors.js';
import { makeRng } from '../util/rng.js';
import { channelGroups, channelNorms, type ChannelAnalysis, type ChannelGroup, type ChannelProducer, type ChannelSlice, type DenseGroup, type SliceRole } from './channels.js';
import { allocateChannels, channelMaskSTE, keepCount, sharedWithinTape } from './masks.js';
import { admmPhase, applyMasks, finetuneMasked, resumeChosenMasks, saveChosenMasks, type PhaseRecord, type PruneConfig } from './prune.js';

/** What the masked network sets to zero for a removed channel (as shrink.ts' maskChannels). */
const MASKED_ROLES: ReadonlySet<SliceRole> = new Set<SliceRole>(['weight', 'bias', 'norm-scale', 'norm-bias']);

/** Channel c of a group occupies indices offset + c·block … offset + (c+1)·block − 1 along `axis` of the variable. */
export interface VariableSlice {
  /** the network's parameter (initializer name) */
  variable: string;
  axis: number;
  offset: number;
  block: number;
}

export interface PrunableGroup {
  /** index in analysis.groups: the order of shrinkChannels' kept lists */
  index: number;
  group: ChannelGroup;
  /** what a channel's mask multiplies: producer weight rows and biases, BatchNormalization scale and shift */
  masked: VariableSlice[];
  /** the variable of each producer's weight (group.producers order): the channel norms */
  producerWeights: string[];
  /**
   * what a channel's mask multiplies while HYDRA's scores train: the consumers' input-weight slices (the
   * group's channels then reach no output, as in the masked network), or `masked` when a consumer's weight
   * is not a trainable initializer
   */
  scoreMasked: VariableSlice[];
}

export interface ChannelPlan {
  analysis: ChannelAnalysis;
  groups: PrunableGroup[];
  /** groups that keep every channel, with the reason */
  dense: DenseGroup[];
}

/**
 * A copy of `model` where every node reading a float initializer that another node reads too (directly or
 * through Identity nodes, as PyTorch shares identical initializers) reads its own copy, so a channel mask
 * acts on one layer's parameters only. The model itself when nothing is shared.
 */
export function unshareInitializers(model: OnnxModel): OnnxModel {
  const g0 = model.proto.graph!;
  const floatInits = new Set((g0.initializer ?? []).filter((t) => t.dataType === onnx.TensorProto.DataType.FLOAT).map((t) => t.name ?? ''));
  const identityOf = new Map<string, string>();
  for (const n of g0.node ?? []) if (n.opType === 'Identity' && n.input?.[0] && n.output?.[0]) identityOf.set(n.output[0], n.input[0]);
  const root = (name: string): string | undefined => {
    for (let hops = 0; hops < 16; hops++) {
      if (floatInits.has(name)) return name;
      const src = identityOf.get(name);
      if (src === undefined) return undefined;
      name = src;
    }
    return undefined;
  };
  const readers = new Map<string, { node: number; slot: number }[]>();
  (g0.node ?? []).forEach((n, i) => {
    if (n.opType === 'Identity') return;
    (n.input ?? []).forEach((name, slot) => {
      const r = name ? root(name) : undefined;
      if (r) readers.set(r, [...(readers.get(r) ?? []), { node: i, slot }]);
    });
  });
  const shared = [...readers].filter(([, rs]) => rs.length > 1);
  if (!shared.length) return model;
  const out = cloneModel(model);
  const g = out.proto.graph!;
  const names = new Set([...(g.initializer ?? []).map((t) => t.name ?? ''), ...(g.node ?? []).flatMap((n) => n.output ?? []), ...(g.input ?? []).map((i) => i.name ?? '')]);
  const byName = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
  for (const [name, rs] of shared) {
    const src = byName.get(name)!;
    for (const [k, r] of rs.entries()) {
      let copy = `${name}.${k}`;
      for (let j = 1; names.has(copy); j++) copy = `${name}.${k}_${j}`;
      names.add(copy);
      const t: TensorProto = onnx.TensorProto.decode(onnx.TensorProto.encode(src).finish());
      t.name = copy;
      g.initializer!.push(onnx.TensorProto.create(t));
      const node = g.node![r.node]!;
      const inputs = (node.input ?? []).slice();
      inputs[r.slot] = copy;
      node.input = inputs;
    }
  }
  // Identity nodes and initializers nobody reads any more
  for (let changed = true; changed;) {
    const read = new Set([...(g.node ?? []).flatMap((n) => n.input ?? []), ...(g.output ?? []).map((o) => o.name ?? '')]);
    const before = g.node!.length;
    g.node = (g.node ?? []).filter((n) => n.opType !== 'Identity' || (n.output ?? []).some((o) => read.has(o)));
    changed = g.node.length !== before;
  }
  const read = new Set([...(g.node ?? []).flatMap((n) => n.input ?? []), ...(g.output ?? []).map((o) => o.name ?? '')]);
  g.initializer = (g.initializer ?? []).filter((t) => read.has(t.name ?? ''));
  g.input = (g.input ?? []).filter((i) => !byName.has(i.name ?? '') || read.has(i.name ?? ''));
  return out;
}

/**
 * The channel groups of a network and, for each, the parameters its channel masks multiply. A group whose
 * masked tensors are not trainable initializers (e.g. Constant nodes) keeps its channels, with the reason.
 */
export function planChannels(graph: TfGraph): ChannelPlan {
  const model = graph.prepared.model;
  const analysis = channelGroups(model, graph.prepared);
  const identityOf = new Map<string, string>();
  for (const n of model.proto.graph?.node ?? []) if (n.opType === 'Identity' && n.input?.[0] && n.output?.[0]) identityOf.set(n.output[0], n.input[0]);
  const variableOf = (name: string): string | undefined => {
    for (let hops = 0; hops < 16; hops++) {
      if (graph.variables.has(name)) return name;
      const src = identityOf.get(name);
      if (src === undefined) return undefined;
      name = src;
    }
    return undefined;
  };
  const groups: PrunableGroup[] = [];
  const dense: DenseGroup[] = [...analysis.dense];
  analysis.groups.forEach((group, index) => {
    // the group's slices of the given roles as variable slices (each once), and the first that is no variable
    const variableSlices = (roles: (role: SliceRole) => boolean): { slices: VariableSlice[]; missing?: ChannelSlice } => {
      const found = new Map<string, VariableSlice>();
      let missing: ChannelSlice | undefined;
      for (const s of group.slices) {
        if (!roles(s.role)) continue;
        const variable = variableOf(s.tensor);
        if (!variable) {
          missing ??= s;
          continue;
        }
        const v = { variable, axis: s.axis, offset: s.offset, block: s.block };
        found.set(JSON.stringify(v), v);
      }
      return { slices: [...found.values()], missing };
    };
    const masked = variableSlices((role) => MASKED_ROLES.has(role));
    let why = masked.missing && `${masked.missing.node}: its ${masked.missing.role} '${masked.missing.tensor}' is not a trainable initializer`;
    const producerWeights = group.producers.map((p) => variableOf(p.weight));
    if (!why && producerWeights.some((w) => !w)) why = `${group.producers[producerWeights.indexOf(undefined)]!.node}: its weight is not a trainable initializer`;
    if (why) {
      dense.push({ producers: group.producers.map((p) => p.node), channels: group.channels, reason: why });
      return;
    }
    const consumers = variableSlices((role) => role === 'input-weight');
    const scoreMasked = !consumers.missing && consumers.slices.length ? consumers.slices : masked.slices;
    groups.push({ index, group, masked: masked.slices, producerWeights: producerWeights as string[], scoreMasked });
  });
  return { analysis, groups, dense };
}

/** One-line errors before any training: nothing prunable, or a sparsity that removes no channel. */
export function checkChannelPlan(plan: ChannelPlan, sparsity: number, model: string): void {
  if (!plan.groups.length) {
    const reasons = plan.dense.map((d) => `${d.producers.join(', ')}: ${d.reason}`).join('; ');
    throw new UserError(`--structure channel: no channel group of '${model}' can be pruned (${reasons || 'it has no Conv/ConvTranspose/Gemm/MatMul layer'})`);
  }
  if (plan.groups.every((pg) => keepCount(pg.group.channels, sparsity) >= pg.group.channels)) {
    const sizes = [...new Set(plan.groups.map((pg) => pg.group.channels))].sort((a, b) => a - b).join(', ');
    throw new UserError(`--sparsity ${sparsity} removes no channel: its groups have ${sizes} channels and each keeps ⌈(1 − sparsity)·channels⌉; raise --sparsity`);
  }
}

const prod = (xs: readonly number[]): number => xs.reduce((p, d) => p * d, 1);

/** Zero, in `target` (a tensor of `shape`), the slice entries of every channel whose `keep` is 0. */
function zeroRemoved(target: Float32Array, shape: readonly number[], s: VariableSlice, keep: Float32Array): void {
  const dim = shape[s.axis]!;
  const inner = prod(shape.slice(s.axis + 1));
  const outer = prod(shape.slice(0, s.axis));
  keep.forEach((k, c) => {
    if (k) return;
    for (let j = 0; j < s.block; j++) {
      const p = s.offset + c * s.block + j;
      for (let o = 0; o < outer; o++) target.fill(0, (o * dim + p) * inner, (o * dim + p + 1) * inner);
    }
  });
}

/** 0/1 per element of every variable the slices touch: 0 where a removed channel's slice lies. */
export function elementMasks(graph: TfGraph, slicesPerGroup: readonly (readonly VariableSlice[])[], keep: readonly Float32Array[]): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  slicesPerGroup.forEach((slices, gi) => {
    for (const s of slices) {
      const v = graph.variables.get(s.variable)!;
      let m = out.get(s.variable);
      if (!m) out.set(s.variable, (m = new Float32Array(v.size).fill(1)));
      zeroRemoved(m, v.shape, s, keep[gi]!);
    }
  });
  return out;
}

/** Per analysis group, the kept channel indices (undefined: a group that keeps all, as shrinkChannels takes them). */
export function keptChannels(plan: ChannelPlan, keep: readonly Float32Array[]): (number[] | undefined)[] {
  const kept: (number[] | undefined)[] = plan.analysis.groups.map(() => undefined);
  plan.groups.forEach((pg, i) => {
    kept[pg.index] = Array.from(keep[i]!, (k, c) => (k ? c : -1)).filter((c) => c >= 0);
  });
  return kept;
}

/** Channel norms (L2 over every producer's rows) of each group, from `valueOf(variable)`. */
export function groupNorms(graph: TfGraph, plan: ChannelPlan, valueOf: (variable: string) => Float32Array): Float32Array[] {
  return plan.groups.map((pg) => {
    const weightOf = (p: ChannelProducer): HostTensor => {
      const v = pg.producerWeights[pg.group.producers.indexOf(p)]!;
      return { dtype: 'float32', shape: graph.variables.get(v)!.shape, data: valueOf(v) };
    };
    return Float32Array.from(channelNorms(pg.group, weightOf));
  });
}

/**
 * The masked parameters of the forward pass: every variable of `slices` (per plan group: `masked`, the
 * producers, or `scoreMasked`, the consumers) multiplied by its channels' masks (broadcast along the
 * slice's axis), differentiable with respect to the masks.
 */
export class ChannelMasker {
  private readonly factors = new Map<string, { group: number; index: tf.Tensor1D; shape: number[] }[]>();

  constructor(private readonly graph: TfGraph, plan: ChannelPlan, slices: 'masked' | 'scoreMasked' = 'masked') {
    plan.groups.forEach((pg, gi) => {
      for (const s of pg[slices]) {
        const shape = graph.variables.get(s.variable)!.shape;
        // position p of the axis reads mask entry c (its channel), or entry `channels` (a 1) outside the group's slice
        const index = new Int32Array(shape[s.axis]!).fill(pg.group.channels);
        for (let c = 0; c < pg.group.channels; c++) for (let j = 0; j < s.block; j++) index[s.offset + c * s.block + j] = c;
        const list = this.factors.get(s.variable) ?? [];
        list.push({ group: gi, index: tf.keep(tf.tensor1d(index, 'int32')), shape: shape.map((d, k) => (k === s.axis ? d : 1)) });
        this.factors.set(s.variable, list);
      }
    });
  }

  apply(masks: readonly tf.Tensor[]): Map<string, tf.Tensor> {
    const padded = masks.map((m) => tf.concat([m, tf.ones([1])]));
    const out = new Map<string, tf.Tensor>();
    for (const [name, list] of this.factors) {
      let t: tf.Tensor = this.graph.variables.get(name)!;
      for (const f of list) t = tf.mul(t, tf.reshape(tf.gather(padded[f.group]!, f.index), f.shape));
      out.set(name, t);
    }
    return out;
  }

  dispose(): void {
    for (const list of this.factors.values()) for (const f of list) f.index.dispose();
    this.factors.clear();
  }
}

export interface ChannelPruneResult {
  /** per plan group: 1 for a kept channel, 0 for a removed one */
  keep: Float32Array[];
  /** per analysis group: kept channel indices (undefined: all), for maskChannels / shrinkChannels */
  kept: (number[] | undefined)[];
  /** element masks of the masked variables (the fine-tuning keeps their zeros) */
  masks: Map<string, Float32Array>;
  phases: PhaseRecord[];
  resumed: string[];
}

/**
 * Channel pruning of `net` (whose graph `plan` was made from) with `c.method`; the network's variables end
 * as the fine-tuned masked network.
 */
export async function pruneChannels(net: Net, data: Pick<DataSplits, 'train' | 'test'>, objective: Objective, plan: ChannelPlan, c: PruneConfig): Promise<ChannelPruneResult> {
  const g = net.graph;
  if (!(c.sparsity > 0 && c.sparsity < 1)) throw new UserError(`--sparsity must be in (0, 1) (the fraction of channels removed), got ${c.sparsity}`);
  checkChannelPlan(plan, c.sparsity, g.prepared.model.file ?? 'the model');
  const phases: PhaseRecord[] = [];
  const resumed: string[] = [];
  const maskedSlices = plan.groups.map((pg) => pg.masked);
  const valueOf = (v: string): Float32Array => g.variables.get(v)!.dataSync() as Float32Array;
  const log = (s: string): void => void (!c.quiet && process.stderr.write(`${s}\n`));

  let keep: Float32Array[] | undefined;
  const done = resumeChosenMasks(net, c, 'channel');
  if (done) {
    keep = plan.groups.map((pg) => {
      const k = done.get(`keep:${pg.index}`);
      if (!k || k.length !== pg.group.channels) throw new UserError(`checkpoint in '${c.checkpointDir}' does not fit this model's channel groups; use another --checkpoint-dir`);
      return k;
    });
    resumed.push('prune');
  }

  if (!keep) {
    const t0 = performance.now();
    if (c.method === 'hydra') {
      const rng = makeRng(`${c.prune.seed}:channel-scores`);
      const norms = groupNorms(g, plan, valueOf);
      const scores = plan.groups.map((pg, i) => {
        const n = pg.group.channels;
        let init: Float32Array;
        if (c.scoreInit === 'scaled') {
          const max = Math.max(...norms[i]!);
          init = Float32Array.from(norms[i]!, (v) => (max > 0 ? v / max : 1));
        } else {
          const bound = 1 / Math.sqrt(n);
          init = Float32Array.from({ length: n }, () => (2 * rng() - 1) * bound);
        }
        return tf.variable(tf.tensor1d(init), true, `channel-score:${pg.index}`);
      });
      const vars = new Map(scores.map((s, i) => [`group${plan.groups[i]!.index}`, s]));
      const masker = new ChannelMasker(g, plan, 'scoreMasked');
      // the top-k masks of one version of the scores (the attack and the loss of a step share them)
      let cached: { ids: object[]; hard: Float32Array[] } | undefined;
      const hardMasks = (): Float32Array[] => {
        const ids = scores.map((s) => (s as unknown as { dataId: object }).dataId);
        if (!cached || cached.ids.some((id, i) => id !== ids[i])) cached = { ids, hard: allocateChannels(scores.map((s) => s.dataSync() as Float32Array), c.sparsity, c.allocation) };
        return cached.hard;
      };
      const overrides = sharedWithinTape(scores, () => {
        const hard = hardMasks();
        return masker.apply(scores.map((s, i) => channelMaskSTE(s, hard[i]!)));
      });
      const r = await trainLoop(net, data, objective, { vars, overrides }, { ...c.prune, checkpointDir: c.checkpointDir ? path.join(c.checkpointDir, 'scores') : undefined, resume: c.resume });
      phases.push({ name: 'scores', history: r.history, seconds: r.seconds });
      if (r.resumedFrom !== undefined) resumed.push('scores');
      keep = allocateChannels(scores.map((s) => s.dataSync().slice() as Float32Array), c.sparsity, c.allocation);
      masker.dispose();
      for (const s of scores) s.dispose();
    } else if (c.method === 'lwm') {
      keep = allocateChannels(groupNorms(g, plan, valueOf), c.sparsity, c.allocation);
    } else {
      // ADMM on the producers' weights; Π keeps the k channels of largest norm of each group
      const weightSlices = plan.groups.map((pg) => pg.group.producers.map((p, k) => ({ variable: pg.producerWeights[k]!, axis: p.axis, offset: p.offset, block: p.block })));
      const W = new Map(weightSlices.flat().map((s) => [s.variable, g.variables.get(s.variable)!]));
      const supports = (values: Map<string, Float32Array>): Map<string, Float32Array> => {
        const k = allocateChannels(groupNorms(g, plan, (v) => values.get(v)!), c.sparsity, c.allocation);
        return elementMasks(g, weightSlices, k);
      };
      const r = await admmPhase(net, data, objective, W, supports, c);
      phases.push(r.phase);
      if (r.resumed) resumed.push('admm');
      keep = allocateChannels(groupNorms(g, plan, valueOf), c.sparsity, c.allocation);
    }
    const masks = elementMasks(g, maskedSlices, keep);
    applyMasks(new Map([...masks.keys()].map((n) => [n, g.variables.get(n)!])), masks);
    saveChosenMasks(net, c, 'channel', masks, new Map(plan.groups.map((pg, i) => [`keep:${pg.index}`, keep![i]!])));
    const removed = keep.reduce((s, k) => s + k.length - k.reduce((a, b) => a + b, 0), 0);
    log(`channel ${c.method}: ${removed} of ${plan.groups.reduce((s, pg) => s + pg.group.channels, 0)} channels removed (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }

  const masks = elementMasks(g, maskedSlices, keep);
  const ft = await finetuneMasked(net, data, objective, masks, c);
  if (ft.phase) phases.push(ft.phase);
  if (ft.resumed) resumed.push('finetune');
  return { keep, kept: keptChannels(plan, keep), masks, phases, resumed };
}
