// The compiled engine. A prepared graph becomes onnxruntime models per batch size and mode:
//  * a forward model (weights as inputs) that also returns what the backward pass needs, and a backward
//    model made by reverse-mode differentiation over ONNX nodes. Both run synchronously inside one
//    tf.customGrad op, so losses and optimizers written in tfjs train the network at onnxruntime speed;
//  * for fixed weights (attacks, the inner loop of adversarial training), one fused model computing the
//    logits and the input gradient of cross-entropy, KL or DLR loss (or of a given logit gradient), weights
//    baked in so onnxruntime can pre-pack them.
import seedrandom from 'seedrandom';
import { tf } from '../../tfjs/tf.js';
import type { PreparedGraph } from '../../graph/graph.js';
import { Attrs, parseNode, type Node } from '../../ops/ir.js';
import { decodeTensor, hostTensor, numberAt, type HostTensor } from '../../onnx/tensor.js';
import { onnx } from '../../onnx/proto.js';
import { GraphBuilder } from '../../onnx/builder.js';
import { COMPILED_OPSET, batchNormTraining, opSpec, type GradCtx, type GradRegion, type GradRule } from '../../ops/index.js';
import { emitNormalized, shapeLookup } from './normalize.js';
import { withNchwcConvs } from './nchwc.js';
import { alignedCopies } from '../../util/aligned.js';
import { BakeChoice, PassBakeChoice } from './bake-choice.js';
import { splitWeightPrep } from './hoist.js';
import { NotCompilableError } from './errors.js';
import { BOUNDS_EPS, BOUNDS_OUT, BOUNDS_SPEC, emitBounds, type CrownOptions } from './bounds.js';
import { SyncSession, nchwcBlockSize, type OrtOut } from '../ort-sync.js';
import { emitDlr } from '../dlr.js';

export { NotCompilableError };

/** The gradient rule of a node's operator (no gradient: nothing flows back). */
export function gradientOf(n: Node): GradRule {
  const grad = opSpec(n.opType)?.grad;
  if (!grad) throw new NotCompilableError(`no gradient rule for ${n.opType} (${n.label})`);
  return typeof grad === 'function' ? grad : () => [];
}

interface BnStat { mean: string; var: string; runMean: string; runVar: string; momentum: number }
interface DropMask { name: string; ratio: number; shape: number[] }

interface Forward {
  fb: GraphBuilder;
  /** inputs besides x and parameters (the ε and spec of bound graphs) */
  extraInputs: string[];
  classes: number;
  xName: string;
  xShape: number[];
  /** parameters fed as inputs (empty when baked) */
  paramInputs: string[];
  /** parameters appended as initializers when a session is made (baked), with their shapes */
  baked: Map<string, number[]>;
  bnStats: BnStat[];
  /** lowered subgraphs with their own gradient rule (training-mode BatchNormalization) */
  regions: GradRegion[];
  dropMasks: DropMask[];
  logits: string;
  /** initializers of the forward graph (constants, and baked parameters) */
  consts: Map<string, HostTensor>;
}

const configKey = (batch: number, o: CompiledRunOptions): string =>
  `${batch}|${o.bounds ? (o.bounds.spec ? 'crown' : 'ibp') : o.training}|${o.gradX}|${o.gradParams}${o.bounds ? '' : o.ceTarget ? '|ce' : o.trades ? '|trades' : ''}${(o.bnGroups ?? 1) > 1 ? `|groups ${o.bnGroups}` : ''}`;
/** inputs of the fused training graph: the cross-entropy target, and 1/N */
const CE_TARGET = 'ce_target';
const CE_PER_N = 'ce_per_n';
/** inputs of the fused TRADES graph: one-hot labels of the clean half, β, and 1/N */
const TRADES_LABELS = 'trades_labels';
const TRADES_BETA = 'trades_beta';
const TRADES_PER_N = 'trades_per_n';
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/**
 * Inference-mode BatchNormalization nodes that directly follow a convolution whose output nothing else reads,
 * by the index of that Conv: they can be folded into its weight and bias.
 */
function foldableBatchNorms(p: PreparedGraph): Map<number, Node> {
  const readers = new Map<string, number>();
  for (const n of p.runNodes) for (const i of n.inputs) if (i) readers.set(i, (readers.get(i) ?? 0) + 1);
  const producer = new Map<string, number>();
  p.runNodes.forEach((n, k) => n.outputs.forEach((o) => o && producer.set(o, k)));
  const out = new Map<number, Node>();
  for (const bn of p.runNodes) {
    if (bn.opType !== 'BatchNormalization' || bn.outputs.slice(1).some((o) => o) || bn.inputs.length < 5) continue;
    const k = producer.get(bn.inputs[0]!);
    const conv = k === undefined ? undefined : p.runNodes[k]!;
    if (!conv || conv.opType !== 'Conv' || readers.get(bn.inputs[0]!) !== 1 || p.outputs.includes(bn.inputs[0]!)) continue;
    if (!p.params.has(conv.inputs[1]!)) continue;
    out.set(k!, bn);
  }
  return out;
}

/**
 * Forward graph at opset 18. With `bake`, parameters are initializers whose values are appended when a
 * session is made (see withWeights); otherwise they are inputs. `foldBn` (inference mode): a BatchNormalization
 * right after a convolution is folded into the convolution's weight and bias, W·k and (b − mean)·k + bias
 * with k = scale/√(var + ε), computed in the graph from the weights alone (hoisted out of fed attack models,
 * see hoist.ts; onnxruntime fuses baked ones itself).
 */
function emitForward(p: PreparedGraph, batch: number, training: boolean, withIndices: boolean, bake: boolean, bnGroups = 1, foldBn = false): Forward {
  if (p.inputs.length !== 1) throw new NotCompilableError('more than one graph input');
  const inp = p.inputs[0]!;
  const fb = new GraphBuilder(COMPILED_OPSET, 'fwd');
  const shapeOf = shapeLookup(p, batch);
  const xShape = shapeOf(inp.name);
  fb.input(inp.name, 'float32', xShape);
  const used = new Set<string>();
  for (const n of p.runNodes) for (const i of n.inputs) if (i) used.add(i);
  const consts = new Map<string, HostTensor>();
  const paramInputs: string[] = [];
  const baked = new Map<string, number[]>();
  for (const name of [...p.params.keys()].filter((n) => used.has(n))) {
    const info = p.params.get(name)!;
    if (bake) {
      baked.set(name, info.shape);
      fb.reserve(name);
    } else {
      fb.input(name, 'float32', info.shape);
      paramInputs.push(name);
    }
  }
  for (const name of used) {
    const c = p.constantAt(name, batch);
    if (c) {
      consts.set(name, c);
      fb.init(name, c);
    }
  }
  const bnStats: BnStat[] = [];
  const regions: GradRegion[] = [];
  const dropMasks: DropMask[] = [];
  const folds = foldBn && !training ? foldableBatchNorms(p) : new Map<number, Node>();
  const folded = new Set([...folds.values()]);
  for (const [k, n] of p.runNodes.entries()) {
    const a = new Attrs(n);
    if (folded.has(n)) continue;
    const bn = folds.get(k);
    if (bn) {
      const w = n.inputs[1]!;
      const wShape = shapeOf(w);
      const [scale, bias, mean, variance] = bn.inputs.slice(1) as [string, string, string, string];
      const eps = new Attrs(bn).float('epsilon', 1e-5);
      const perChannel = fb.op('Mul', [scale, fb.op('Reciprocal', [fb.op('Sqrt', [fb.op('Add', [variance, fb.scalarF(eps)])])])]);
      const wFolded = fb.op('Mul', [w, fb.reshape(perChannel, [-1, ...new Array<number>(wShape.length - 1).fill(1)])]);
      const centred = n.inputs[2] ? fb.op('Sub', [n.inputs[2], mean]) : fb.op('Neg', [mean]);
      const bFolded = fb.op('Add', [fb.op('Mul', [centred, perChannel]), bias]);
      const conv = parseNode({ ...n.proto, input: [n.inputs[0]!, wFolded, bFolded], output: [bn.outputs[0]!] }, n.index);
      emitNormalized(fb, conv, p.opset, consts, (v) => (v === wFolded ? wShape : v === bFolded ? [wShape[0]!] : shapeOf(v)));
      continue;
    }
    if (n.opType === 'BatchNormalization' && training) {
      // training form lowered to primitive ops, differentiated as one region by its closed-form rule
      const { mean, var: v, region } = batchNormTraining(fb, n.inputs[0]!, n.inputs[1]!, n.inputs[2]!, shapeOf(n.inputs[0]!), a.float('epsilon', 1e-5), n.outputs[0]!, bnGroups);
      regions.push(region);
      bnStats.push({ mean, var: v, runMean: n.inputs[3]!, runVar: n.inputs[4]!, momentum: a.float('momentum', 0.9) });
      continue;
    }
    if (n.opType === 'Dropout') {
      let ratio = p.opset >= 12 ? 0.5 : a.float('ratio', 0.5);
      if (p.opset >= 12 && n.inputs[1]) {
        const r = p.consts.get(n.inputs[1]);
        if (!r) throw new NotCompilableError('Dropout ratio computed at run time');
        ratio = numberAt(r, 0);
      }
      if (training && ratio > 0) {
        // masks are drawn in JS (seeded) and fed: y = x · mask/(1 − ratio)
        const shape = shapeOf(n.inputs[0]!);
        const name = `dropout_mask/${n.outputs[0]}`;
        fb.input(name, 'float32', shape);
        dropMasks.push({ name, ratio, shape });
        fb.add('Mul', [n.inputs[0]!, name], {}, [n.outputs[0]!]);
      } else fb.add('Identity', [n.inputs[0]!], {}, [n.outputs[0]!]);
      continue;
    }
    if (n.opType === 'MaxPool' && withIndices && !n.outputs[1]) {
      const withIdx = parseNode({ ...n.proto, output: [n.outputs[0]!, `${n.outputs[0]}/argmax`] }, n.index);
      emitNormalized(fb, withIdx, p.opset, consts, shapeOf);
      continue;
    }
    emitNormalized(fb, n, p.opset, consts, shapeOf);
  }
  return { fb, extraInputs: [], classes: (shapeOf(p.outputs[0]!).at(-1) as number) ?? 1, xName: inp.name, xShape, paramInputs, baked, bnStats, regions, dropMasks, logits: p.outputs[0]!, consts };
}

/** The interval-bound form of an (inference-mode) forward graph: output Concat(lower, upper) of the logits. */
function boundsForward(p: PreparedGraph, batch: number, withIndices: boolean, bake: boolean, crown: boolean | Pick<CrownOptions, 'intermediate' | 'stats' | 'maxPool' | 'alphaInputs'>, threads?: number, margins = false): Forward {
  const f = emitForward(p, batch, false, withIndices, bake);
  const shapes = crown ? probeShapes(f, threads) : undefined;
  const extra = typeof crown === 'object' ? crown : {};
  const fb = emitBounds(f.fb, f.xName, f.logits, shapeLookup(p, batch), shapes && { shapes, batch, classes: f.classes, ...extra }, margins);
  const consts = new Map(f.consts);
  for (const t of fb.initializers) if (!consts.has(t.name ?? '')) consts.set(t.name!, decodeTensor(t));
  return { ...f, fb, consts, extraInputs: crown ? [BOUNDS_EPS, BOUNDS_SPEC] : [BOUNDS_EPS], logits: BOUNDS_OUT };
}

/**
 * A standalone ONNX model computing interval bounds of the logits for inputs within ε (L∞) of x, clipped
 * to [0,1]: inputs x, `bounds/eps` and every parameter (by initializer name); output `bounds/logits`
 * = Concat(lower, upper) along the batch axis. Used by the per-op tfjs engines and by verification.
 */
export function boundsModel(p: PreparedGraph, batch: number, crown = false): Uint8Array {
  const f = boundsForward(p, batch, false, false, crown);
  return modelBytes(f.fb, [f.logits], true);
}

/**
 * A standalone ONNX model computing IBP lower bounds of the margins spec·logits over the L∞ ball of radius
 * eps (∩ [0,1]), the spec folded into the last linear layer when there is one: inputs x, `bounds/eps`,
 * `bounds/spec` [batch, classes, classes] and every parameter; output `bounds/logits` [batch, classes].
 */
export function marginBoundsModel(p: PreparedGraph, batch: number): Uint8Array {
  const f = boundsForward(p, batch, false, false, false, undefined, true);
  return modelBytes(f.fb, [f.logits]);
}

/**
 * The same margins bounded by CROWN (Zhang et al. 2018), never looser than IBP (the elementwise maximum of
 * both): every ReLU's pre-activation bounds are first tightened by their own CROWN pass when the layer has
 * at most `intermediate` neurons per example (else they keep IBP's), then the margins are bounded backwards
 * from the logits with the class-difference specification folded in. Also says how many ReLU layers got
 * CROWN bounds.
 */
export function crownMarginModel(p: PreparedGraph, batch: number, intermediate: number): { model: Uint8Array; crownLayers: number; ibpLayers: number; rowsPerExample: number } {
  const stats = { crownLayers: 0, ibpLayers: 0, rowsPerExample: 0 };
  const f = boundsForward(p, batch, false, false, { intermediate, stats, maxPool: true }, undefined, true);
  return { model: modelBytes(f.fb, [f.logits]), ...stats };
}

/**
 * α-CROWN (Xu et al. 2021): the CROWN margin model with every ReLU's lower slope an input (`alphaInputs`),
 * fused with its gradient: outputs the margin bounds [batch, classes], d(Σ dmargins·margins)/dα for each
 * slope input (`bounds/dmargins` [batch, classes] weighting the margins to raise), and each ReLU's adaptive
 * CROWN slope at the given α.
 */
export function alphaCrownModel(p: PreparedGraph, batch: number, intermediate: number): { model: Uint8Array; alphaInputs: { name: string; shape: number[]; adaptive?: string }[]; gradOutputs: string[] } {
  const alphaInputs: { name: string; shape: number[]; adaptive?: string }[] = [];
  const f = boundsForward(p, batch, false, false, { intermediate, alphaInputs }, undefined, true);
  if (!alphaInputs.length) throw new NotCompilableError('α-CROWN: the model has no ReLU');
  const shapes = probeShapes(f, undefined);
  const b = f.fb.clone('alpha');
  const classes = shapes.get(BOUNDS_OUT)!.at(-1)!;
  const dm = b.input('bounds/dmargins', 'float32', [batch, classes]);
  const grads = differentiate(f, shapes, alphaInputs.map((a) => a.name), { bb: b, fwdValue: (v) => v, dlogits: dm });
  const gradOutputs = grads.map((g, i) => {
    if (g) return g;
    // a slope that no bound depends on (e.g. a ReLU layer too large for its own pass, only in the IBP part)
    return b.op('ConstantOfShape', [b.constI64(alphaInputs[i]!.shape)], { value: hostTensor('float32', [1], [0]) });
  });
  // outputs: the margin bounds, the slopes' gradients, and CROWN's adaptive slopes (the starting point)
  return { model: modelBytes(b, [BOUNDS_OUT, ...gradOutputs, ...alphaInputs.map((a) => a.adaptive!)]), alphaInputs, gradOutputs };
}

/**
 * A model from a builder, its outputs listed by name only (onnxruntime infers their types). `portable`: only
 * standard ONNX operators (no onnxruntime NCHWc kernels), for models other engines convert.
 */
function modelBytes(b: GraphBuilder, outputs: string[], portable = false): Uint8Array {
  return finished(b, outputs, portable).toModel({ untypedOutputs: true });
}

/** The builder a model is written from: outputs set, convolutions moved to NCHWc kernels unless `portable`. */
function finished(b: GraphBuilder, outputs: string[], portable = false): GraphBuilder {
  const m = portable ? b : withNchwcConvs(b, nchwcBlockSize(), outputs);
  m.setOutputs(outputs);
  return m;
}

/**
 * A template model plus weight initializers. Protobuf merges repeated occurrences of an embedded message,
 * so appending a ModelProto holding only `graph.initializer` adds the weights without re-encoding the graph.
 */
function withWeights(template: Uint8Array, weights: Map<string, number[]>, values: Map<string, Float32Array>): Uint8Array {
  if (!weights.size) return template;
  const initializer = [...weights].map(([name, dims]) => {
    const v = values.get(name);
    if (!v) throw new Error(`no value for parameter '${name}'`);
    return { name, dataType: 1, dims, rawData: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) };
  });
  const extra = onnx.ModelProto.encode({ graph: { initializer } }).finish();
  const out = new Uint8Array(template.length + extra.length);
  out.set(template);
  out.set(extra, template.length);
  return out;
}

function zerosFor(weights: Map<string, number[]>): Map<string, Float32Array> {
  return new Map([...weights].map(([n, s]) => [n, new Float32Array(numel(s))]));
}

/**
 * One onnxruntime run of `b` on zeros that returns the Shapes of `names` (and the values `extra`), not the
 * values: outputs land in fresh buffers, whose first touch costs ~3 ms per MB on these VMs: the small CNN's
 * values at batch 256 (11.5 MB) took 30-57 ms to return, its last value alone 3 ms. A new attack session's
 * first call: 114-133 ms before, 72-100 after; ResNet-18's weight-split shape run 192-193 → 128-129 ms.
 * `b` is the caller's scratch copy (the Shape nodes are added to it); `bytes` writes its model with the outputs given.
 */
function shapeRun(b: GraphBuilder, names: string[], extra: string[], bytes: (outputs: string[]) => Uint8Array, inputs: [string, number[]][], threads: number | undefined): { shapes: number[][]; extra: OrtOut[] } {
  const shapeOutputs = names.map((n) => b.op('Shape', [n]));
  const outputs = [...shapeOutputs, ...extra];
  const s = new SyncSession(bytes(outputs), { threads, optimization: 'disabled' });
  const feeds = Object.fromEntries(inputs.map(([name, shape]) => [name, { data: new Float32Array(numel(shape)), shape }]));
  const r = s.run(feeds, outputs);
  s.dispose();
  return { shapes: names.map((_, k) => Array.from(r[k]!.data as BigInt64Array, Number)), extra: r.slice(names.length) };
}

/** Shapes of every value of the forward model (and, for `dtypes`, their element types, read off each value's first element). */
function probeShapes(f: Forward, threads: number | undefined, dtypes?: Map<string, 'float32' | 'int64' | 'int32' | 'bool'>): Map<string, number[]> {
  const names: string[] = [];
  for (const n of f.fb.nodes) for (const o of n.output ?? []) if (o) names.push(o);
  const b = f.fb.clone('probe');
  const firstOf = dtypes ? names.map((n) => b.op('Slice', [b.reshape(n, [-1]), b.constI64([0]), b.constI64([1])])) : [];
  const inputs = f.fb.inputs.map((i): [string, number[]] => [i.name, i.shape as number[]]);
  const r = shapeRun(b, names, firstOf, (outputs) => withWeights(modelBytes(b, outputs), f.baked, zerosFor(f.baked)), inputs, threads);
  const shapes = new Map<string, number[]>();
  names.forEach((n, k) => shapes.set(n, r.shapes[k]!));
  // element types of the computed values (a saved comparison result is bool, an index int64)
  if (dtypes) names.forEach((n, k) => { const d = r.extra[k]!.data; dtypes.set(n, d instanceof Uint8Array ? 'bool' : d instanceof BigInt64Array ? 'int64' : d instanceof Int32Array ? 'int32' : 'float32'); });
  for (const i of f.fb.inputs) shapes.set(i.name, i.shape as number[]);
  for (const [n, c] of f.consts) shapes.set(n, c.shape);
  for (const [n, sh] of f.baked) shapes.set(n, sh);
  return shapes;
}

interface DiffEnv {
  bb: GraphBuilder;
  /** how the backward graph refers to a forward value */
  fwdValue(v: string): string;
  /** gradient of the logits in the backward graph */
  dlogits: string;
  /**
   * gradients the caller reads as flat arrays of the value's size: a Reshape that would write one of them is
   * removed (onnxruntime copies a Reshape into a graph output: 1.6 ms for a 512x512x3x3 filter's gradient)
   */
  flat?: (wrt: string) => boolean;
}

/** Reverse-mode differentiation of the forward graph w.r.t. `wrt`; returns the gradients' names in env.bb. */
function differentiate(f: Forward, shapes: Map<string, number[]>, wrt: string[], env: DiffEnv): string[] {
  const nodes: Node[] = f.fb.nodes.map((n, i) => parseNode(n, i));
  const bb = env.bb;
  const req = new Set(wrt);
  for (const n of nodes) {
    if (n.opType === 'Shape' || n.opType === 'Size') continue;
    if (n.inputs.some((i) => req.has(i))) for (const o of n.outputs) if (o) req.add(o);
  }
  const contrib = new Map<string, string[]>([[f.logits, [env.dlogits]]]);
  const summed = new Map<string, string>();
  const gradOf = (v: string): string | undefined => {
    const s = summed.get(v);
    if (s) return s;
    const parts = contrib.get(v);
    if (!parts || !parts.length) return undefined;
    const out = parts.length === 1 ? parts[0]! : bb.op('Sum', parts);
    summed.set(v, out);
    return out;
  };
  const regionEnding = new Map(f.regions.map((r) => [r.last, r]));
  const inRegion = new Set(f.regions.flatMap((r) => range(r.first, r.last)));
  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k]!;
    if (inRegion.has(k)) continue;
    const region = regionEnding.get(k);
    if (region) {
      const dy = gradOf(region.output);
      if (!dy || !region.inputs.some((i) => req.has(i))) continue;
      const grads = region.grad(bb, dy, env.fwdValue, (i) => req.has(region.inputs[i]!));
      grads.forEach((g, i) => {
        const v = region.inputs[i]!;
        if (g && req.has(v)) contrib.set(v, [...(contrib.get(v) ?? []), g]);
      });
      continue;
    }
    if (!n.outputs.some((o) => contrib.has(o))) continue;
    if (!n.inputs.some((i) => req.has(i))) continue;
    const rule = gradientOf(n);
    const ctx: GradCtx = {
      b: bb, node: n, a: new Attrs(n),
      x: (i) => env.fwdValue(n.inputs[i]!),
      y: (i) => env.fwdValue(n.outputs[i]!),
      dy: (i) => (n.outputs[i] ? gradOf(n.outputs[i]!) : undefined),
      inShape: (i) => shapes.get(n.inputs[i]!)!,
      outShape: (i) => shapes.get(n.outputs[i]!)!,
      need: (i) => !!n.inputs[i] && req.has(n.inputs[i]!),
      ints: (i) => {
        const c = f.consts.get(n.inputs[i]!);
        if (c) return Array.from({ length: c.data.length }, (_, j) => numberAt(c, j));
        const made = f.fb.intConst(n.inputs[i]!);
        if (!made) throw new NotCompilableError(`${n.label}: input ${i} is computed at run time`);
        return made;
      },
      has: (i) => !!n.inputs[i],
      blockedConvs: nchwcBlockSize() > 0,
    };
    let grads: (string | undefined)[];
    try {
      grads = rule(ctx);
    } catch (e) {
      if (e instanceof NotCompilableError) throw e;
      throw new NotCompilableError(`${n.label}: ${(e as Error).message}`);
    }
    grads.forEach((g, i) => {
      const v = n.inputs[i];
      if (!g || !v || !req.has(v)) return;
      contrib.set(v, [...(contrib.get(v) ?? []), g]);
    });
  }
  const producer = new Map(bb.nodes.flatMap((n) => (n.output ?? []).map((o) => [o, n] as const)));
  return wrt.map((w) => {
    let g = gradOf(w) ?? bb.op('ConstantOfShape', [bb.constI64(shapes.get(w)!)]); // no path to the logits
    const reshape = env.flat?.(w) ? producer.get(g) : undefined;
    if (reshape?.opType === 'Reshape' && !reshape.domain && !bb.nodes.some((n) => n.input?.includes(g))) {
      // dropped, not left dead: a second reader of its source would keep onnxruntime from writing the output in place
      bb.nodes.splice(bb.nodes.indexOf(reshape), 1);
      g = reshape.input![0]!;
    }
    const out = `grad/${w}`;
    bb.add('Identity', [g], {}, [out]);
    return out;
  });
}

/** A compiled training configuration: model templates without weights. */
interface TrainTemplate {
  f: Forward;
  fBytes: Uint8Array;
  forwardOutputs: string[];
  bBytes?: Uint8Array;
  /** baked weights the backward model needs */
  bBaked: Map<string, number[]>;
  dyName: string;
  saved: string[];
  fromInputs: string[];
  gradOutputs: string[];
  gradX: boolean;
  gradParams: string[];
  /** forward, cross-entropy gradient and backward in the forward model (gradOutputs among its outputs) */
  fused?: boolean;
}

interface TrainSessions {
  ids?: unknown[];
  forward: SyncSession;
  backward?: SyncSession;
}

/** The backward model of a two-call template: dlogits, the activations the forward kept, the inputs it reuses. */
function runBackward(t: TrainTemplate, s: TrainSessions, kept: Map<string, OrtOut>, feeds: Record<string, Feed>, dy: Float32Array, dyShape: number[]): OrtOut[] {
  const bf: Record<string, Feed> = { [t.dyName]: { data: dy, shape: dyShape } };
  for (const v of t.saved) { const o = kept.get(v)!; bf[v] = { data: o.data, shape: o.shape }; }
  for (const v of t.fromInputs) bf[v] = feeds[v]!;
  return s.backward!.run(bf, t.gradOutputs);
}

function disposeTrainSessions(s: TrainSessions): void {
  s.forward.dispose();
  s.backward?.dispose();
}

/** tfjs' gradient tape being recorded (a new array per outermost tape), or undefined outside any */
function activeTape(): unknown {
  return tf.engine().isTapeOn() ? (tf.engine().state as unknown as { activeTape: unknown }).activeTape : undefined;
}

interface AttackTemplate {
  bytes: Uint8Array;
  baked: Map<string, number[]>;
  /** parameters fed as inputs (a template made without baking) with their shapes */
  paramInputs: [string, number[]][];
  /** a template made without baking: the nodes that read only weights, run once per weight set (see hoist.ts) */
  prep?: { bytes: Uint8Array; inputs: [string, number[]][]; outputs: string[] };
  xName: string;
  xShape: number[];
  /** gradient (grad, logit-grad, dlr*) or next iterate (step-*) output */
  grad: string;
  logits: string;
  /** per-example loss output (dlr*) */
  loss?: string;
  classes: number;
}

/**
 * What an attack model computes besides the logits: 'grad', the input gradient of Σ KL(target ‖ softmax)
 * (cross-entropy for one-hot targets); 'logit-grad', a given logit gradient backpropagated; 'dlr' and
 * 'dlr-targeted', the DLR loss and its input gradient; 'step-*', a whole PGD iteration.
 */
export type AttackKind = 'logits' | 'grad' | 'logit-grad' | 'dlr' | 'dlr-targeted' | 'step-linf' | 'step-l2';

export interface CompiledRunOptions {
  training: boolean;
  /**
   * compute bounds of the logits over the L∞ ball of radius eps (∩ [0,1]) instead: output [2N, classes] =
   * interval lower; upper, and with a spec [N, classes, classes] also the CROWN-IBP lower bounds of
   * spec·logits ([3N, classes])
   */
  bounds?: { eps: number; spec?: Float32Array };
  /** gradient with respect to the input is needed */
  gradX: boolean;
  /** gradients with respect to the trainable parameters are needed */
  gradParams: boolean;
  /** seed of the Dropout masks (training) */
  seed?: number;
  /**
   * Embed the current weights in the sessions (remade whenever other weight tensors are passed): onnxruntime
   * then pre-packs them, which makes convolutions 2-4x faster. Default: true.
   */
  bake?: boolean;
  /**
   * The loss's gradient with respect to the logits will be (softmax(z) − ceTarget)/N (mean cross-entropy
   * against one-hot or soft targets [N, classes]). Forward and backward then run as one onnxruntime call and
   * no activation leaves onnxruntime; a gradient that arrives otherwise is recomputed by the two-call path.
   */
  ceTarget?: Float32Array;
  /**
   * The batch is [clean; adversarial] (N rows each) and the loss is TRADES': CE(z_clean, labels) +
   * β·KL(softmax(z_clean) ‖ softmax(z_adv)), both averaged over N (labels one-hot, [N, classes]). Forward,
   * that loss's gradient and backward then run as one call, like `ceTarget`. Usually with `bnGroups` 2.
   */
  trades?: { labels: Float32Array; beta: number };
  /**
   * Training-mode BatchNormalization normalises each of this many equal parts of the batch by its own
   * statistics, as separate passes would (default 1); the running statistics follow the last part.
   */
  bnGroups?: number;
}

type Feed = { data: Float32Array | BigInt64Array | Int32Array | Uint8Array; shape: readonly number[] };

export type AttackLoss = { kind: 'ce'; labels: Int32Array } | { kind: 'kl'; target: Float32Array };
/**
 * Backpropagate a given gradient dz with respect to the logits [n, classes] to the input (the gradient of
 * Σ dz·z: e.g. FAB's ∇(z_t − z_y)). A type of its own, like DlrLoss, so that code narrowing AttackLoss to
 * its two kinds keeps compiling.
 */
export type LogitGradLoss = { kind: 'logit-grad'; dz: Float32Array };
/** APGD's DLR loss, targeted when `targets` is given (labels and targets: one class per example). */
export type DlrLoss = { kind: 'dlr'; labels: Int32Array; targets?: Int32Array };
export interface LossGrad {
  /** gradient of the summed loss with respect to the input */
  grad: Float32Array;
  /** logits at the input */
  logits: Float32Array;
  /** per-example loss (dlr) */
  loss?: Float32Array;
}

/** log softmax of row `row` of logits [rows, classes], in float64 (plain loops: it runs on every fused training step) */
function logSoftmaxRow(logits: Float32Array, row: number, classes: number): Float64Array {
  const o = row * classes;
  let max = -Infinity;
  for (let j = 0; j < classes; j++) max = Math.max(max, logits[o + j]!);
  let sum = 0;
  for (let j = 0; j < classes; j++) sum += Math.exp(logits[o + j]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(classes);
  for (let j = 0; j < classes; j++) out[j] = logits[o + j]! - lse;
  return out;
}

/** Whether dlogits equals the gradient a fused graph assumed, to float32 rounding (relative to its largest entry). */
function gradientMatches(dy: Float32Array, expected: Float64Array): boolean {
  let worst = 0;
  let largest = 0;
  expected.forEach((e, i) => {
    worst = Math.max(worst, Math.abs(dy[i]! - e));
    largest = Math.max(largest, Math.abs(e));
  });
  return worst <= 1e-4 * largest + 1e-12;
}

/** The gradient the fused cross-entropy graph assumes: (softmax(z) − target)/N. */
function ceLogitGrad(logits: Float32Array, target: Float32Array, classes: number): Float64Array {
  const n = logits.length / classes;
  const out = new Float64Array(logits.length);
  for (let r = 0; r < n; r++) {
    logSoftmaxRow(logits, r, classes).forEach((l, j) => (out[r * classes + j] = (Math.exp(l) - target[r * classes + j]!) / n));
  }
  return out;
}

/**
 * TRADES' loss gradient with respect to the logits [clean; adversarial] (n rows each), in the graph: with
 * l = log softmax, p = softmax and d = l_clean − l_adv per row,
 *   dz_clean = (p_clean − labels + β·p_clean·(d − Σ p_clean·d))/n,   dz_adv = β·(p_adv − p_clean)/n.
 */
function tradesLogitGrad(b: GraphBuilder, logits: string, n: number, classes: number): string {
  const labels = b.input(TRADES_LABELS, 'float32', [n, classes]);
  const beta = b.input(TRADES_BETA, 'float32', []);
  const perN = b.input(TRADES_PER_N, 'float32', []);
  const [zClean, zAdv] = b.split(logits, [n, n], 0) as [string, string];
  const lClean = b.op('LogSoftmax', [zClean], { axis: -1 });
  const lAdv = b.op('LogSoftmax', [zAdv], { axis: -1 });
  const pClean = b.op('Exp', [lClean]);
  const d = b.op('Sub', [lClean, lAdv]);
  const kl = b.reduce('ReduceSum', b.op('Mul', [pClean, d]), [1], true);
  const klGrad = b.op('Mul', [pClean, b.op('Sub', [d, kl])]);
  const dClean = b.op('Mul', [b.op('Add', [b.op('Sub', [pClean, labels]), b.op('Mul', [klGrad, beta])]), perN]);
  const dAdv = b.op('Mul', [b.op('Mul', [b.op('Sub', [b.op('Exp', [lAdv]), pClean]), beta]), perN]);
  return b.op('Concat', [dClean, dAdv], { axis: 0 });
}

/** TRADES' gradient (tradesLogitGrad) for these logits [clean; adversarial], in float64. */
function tradesLogitGradOf(logits: Float32Array, labels: Float32Array, beta: number, classes: number): Float64Array {
  const n = logits.length / classes / 2;
  const out = new Float64Array(logits.length);
  for (let r = 0; r < n; r++) {
    const lc = logSoftmaxRow(logits, r, classes);
    const la = logSoftmaxRow(logits, n + r, classes);
    const pc = new Float64Array(classes);
    const d = new Float64Array(classes);
    let kl = 0;
    for (let j = 0; j < classes; j++) {
      pc[j] = Math.exp(lc[j]!);
      d[j] = lc[j]! - la[j]!;
      kl += pc[j]! * d[j]!;
    }
    for (let j = 0; j < classes; j++) {
      out[r * classes + j] = (pc[j]! - labels[r * classes + j]! + beta * pc[j]! * (d[j]! - kl)) / n;
      out[(n + r) * classes + j] = (beta * (Math.exp(la[j]!) - pc[j]!)) / n;
    }
  }
  return out;
}

/**
 * Fixed weights: logits and loss gradients with respect to the input, one onnxruntime call each, one session
 * per batch size and attack kind (cross-entropy is the KL case with a one-hot target).
 */
export class FrozenNet {
  private readonly sessions = new Map<string, AttackSession>();
  private readonly calls = new Map<string, number>();
  /** per session key: the outputs of its weight-only part for these weights (fed sessions) */
  private readonly prepared = new Map<string, Map<string, OrtOut>>();
  /** hands the aligned memory of the prepared values back (on dispose) */
  private readonly releases: (() => void)[] = [];
  constructor(private readonly net: CompiledNet, private readonly values: Map<string, Float32Array>) {}

  private session(batch: number, kind: AttackKind): AttackSession {
    const key = `${batch}|${kind}`;
    let s = this.sessions.get(key);
    if (!s) {
      s = this.net.attackSession(batch, kind, this.values);
      this.sessions.set(key, s);
    }
    return s;
  }

  /** Run an attack session: the weights added to the feeds when it takes them as inputs; timed for the bake choice. */
  private run(a: AttackSession, feeds: Record<string, Feed>, outputs: string[]): OrtOut[] {
    const weights = (list: [string, number[]][], into: Record<string, Feed>): Record<string, Feed> => {
      for (const [n, shape] of list) {
        const v = this.values.get(n);
        if (!v) throw new Error(`no value for parameter '${n}'`);
        into[n] = { data: v, shape };
      }
      return into;
    };
    weights(a.t.paramInputs, feeds);
    if (a.prep && a.t.prep) {
      let prepared = this.prepared.get(a.key);
      if (!prepared) {
        const started = performance.now();
        const out = a.prep.run(weights(a.t.prep.inputs, {}), a.t.prep.outputs);
        // the convolutions of every call read the blocked filters among them: copied to aligned memory (util/aligned.ts)
        const floats = out.filter((o) => o.data instanceof Float32Array);
        const { copies, release } = alignedCopies(floats.map((o) => o.data as Float32Array));
        this.releases.push(release);
        const aligned = new Map(floats.map((o, i) => [o, { data: copies[i]!, shape: o.shape }]));
        prepared = new Map(a.t.prep.outputs.map((n, i) => [n, aligned.get(out[i]!) ?? out[i]!]));
        this.prepared.set(a.key, prepared);
        this.net.recordAttackPrep(a, performance.now() - started);
      }
      for (const [n, v] of prepared) feeds[n] = v;
    }
    const started = performance.now();
    const out = a.s.run(feeds, outputs);
    this.net.recordAttackCall(a, performance.now() - started);
    this.calls.set(a.key, (this.calls.get(a.key) ?? 0) + 1);
    return out;
  }

  /** Logits (a forward-only session: for many calls with the same weights, e.g. evaluation). */
  logits(x: Float32Array, batch: number): Float32Array {
    const a = this.session(batch, 'logits');
    return this.run(a, { [a.t.xName]: { data: x, shape: a.t.xShape } }, [a.t.logits])[0]!.data as Float32Array;
  }

  /** Gradient of the summed loss with respect to x, and the logits at x (and the DLR loss per example). */
  lossGrad(x: Float32Array, batch: number, loss: AttackLoss | LogitGradLoss | DlrLoss): LossGrad {
    const kind: AttackKind = loss.kind === 'dlr' ? (loss.targets ? 'dlr-targeted' : 'dlr') : loss.kind === 'logit-grad' ? 'logit-grad' : 'grad';
    const a = this.session(batch, kind);
    const t = a.t;
    const k = t.classes;
    const feeds: Record<string, Feed> = { [t.xName]: { data: x, shape: t.xShape } };
    if (loss.kind === 'dlr') {
      feeds.labels = { data: loss.labels, shape: [batch] };
      if (loss.targets) feeds.targets = { data: loss.targets, shape: [batch] };
    } else if (loss.kind === 'logit-grad') feeds.dz = { data: loss.dz, shape: [batch, k] };
    else if (loss.kind === 'kl') feeds.target = { data: loss.target, shape: [batch, k] };
    else {
      const target = new Float32Array(batch * k);
      for (let i = 0; i < batch; i++) target[i * k + loss.labels[i]!] = 1;
      feeds.target = { data: target, shape: [batch, k] };
    }
    const out = this.run(a, feeds, t.loss ? [t.grad, t.logits, t.loss] : [t.grad, t.logits]);
    return { grad: out[0]!.data as Float32Array, logits: out[1]!.data as Float32Array, ...(t.loss ? { loss: out[2]!.data as Float32Array } : {}) };
  }

  /**
   * One PGD iteration in a single onnxruntime call: the loss gradient at xAdv, a signed (L∞) or normalised
   * (L2) step of size alpha, projection onto the eps-ball around x and into [0,1]. Returns the new iterate
   * and the logits at xAdv.
   */
  pgdStep(xAdv: Float32Array, x: Float32Array, batch: number, target: Float32Array, alpha: number, eps: number, norm: 'linf' | 'l2'): { next: Float32Array; logits: Float32Array } {
    const a = this.session(batch, norm === 'linf' ? 'step-linf' : 'step-l2');
    const t = a.t;
    const [nx, z] = this.run(a, {
      [t.xName]: { data: xAdv, shape: t.xShape },
      x_clean: { data: x, shape: t.xShape },
      target: { data: target, shape: [batch, t.classes] },
      alpha: { data: Float32Array.of(alpha), shape: [] },
      eps: { data: Float32Array.of(eps), shape: [] },
    }, [t.grad, t.logits]);
    return { next: nx!.data as Float32Array, logits: z!.data as Float32Array };
  }

  dispose(): void {
    for (const s of this.sessions.values()) this.net.releaseAttackSession(s, this.calls.get(s.key) ?? 0);
    this.sessions.clear();
    this.calls.clear();
    this.prepared.clear();
    for (const release of this.releases.splice(0)) release();
  }
}

/** An attack session as a FrozenNet holds it: its own (weights baked in) or the network's shared one (weights fed). */
interface AttackSession {
  key: string;
  s: SyncSession;
  t: AttackTemplate;
  baked: boolean;
  /** the weight-only part of a fed template */
  prep?: SyncSession;
  /** a baked session: ms spent making it and in its calls */
  spent?: number;
}

/** A prepared graph compiled for onnxruntime (configurations compiled lazily, templates cached). */
export class CompiledNet {
  private readonly templates = new Map<string, TrainTemplate>();
  private readonly sessions = new Map<string, TrainSessions>();
  private readonly attackTemplates = new Map<string, AttackTemplate>();
  private readonly fedAttackSessions = new Map<string, AttackSession>();
  /** per batch size and attack kind: its weight handling, chosen from measured costs */
  private readonly attackStats = new Map<string, BakeChoice>();
  private frozenNet?: { ids: unknown[]; net: FrozenNet };
  private step = 0;
  /** per training configuration: its weight handling, chosen from its passes' times */
  private readonly bakeStats = new Map<string, PassBakeChoice>();

  constructor(readonly p: PreparedGraph, readonly threads?: number) {}

  /** Forward-only or fused input-gradient model of a kind for a batch size (weights appended per FrozenNet). */
  attackTemplate(batch: number, kind: AttackKind, bake = true): AttackTemplate {
    const key = `${batch}|${kind}|${bake}`;
    const hit = this.attackTemplates.get(key);
    if (hit) return hit;
    let t: AttackTemplate;
    if (kind === 'logits') {
      const f = emitForward(this.p, batch, false, false, bake, 1, !bake);
      const classes = shapeLookup(this.p, batch)(f.logits).at(-1)!;
      t = { ...this.attackModel(f, f.fb, [f.logits], bake), baked: f.baked, xName: f.xName, xShape: f.xShape, grad: '', logits: f.logits, classes };
    } else {
      const f = emitForward(this.p, batch, false, true, bake, 1, !bake);
      const shapes = probeShapes(f, this.threads);
      const b = f.fb.clone('attack');
      const classes = shapes.get(f.logits)!.at(-1)!;
      let dz: string;
      let loss: string | undefined;
      if (kind === 'logit-grad') dz = b.input('dz', 'float32', [batch, classes]);
      else if (kind === 'dlr' || kind === 'dlr-targeted') {
        const labels = b.input('labels', 'int32', [batch]);
        const targets = kind === 'dlr-targeted' ? b.input('targets', 'int32', [batch]) : undefined;
        ({ dz, loss } = emitDlr(b, f.logits, batch, classes, labels, targets));
      } else {
        // d/dz of Σ KL(target ‖ softmax(z)) (or Σ CE(z, y), target one-hot) is softmax(z) − target
        dz = b.op('Sub', [b.op('Softmax', [f.logits], { axis: -1 }), b.input('target', 'float32', [batch, classes])]);
      }
      const [gx] = differentiate(f, shapes, [f.xName], { bb: b, fwdValue: (v) => v, dlogits: dz });
      let out = gx!;
      if (kind === 'step-linf' || kind === 'step-l2') {
        const xc = b.input('x_clean', 'float32', f.xShape);
        const alpha = b.input('alpha', 'float32', []);
        const eps = b.input('eps', 'float32', []);
        const zero = b.scalarF(0);
        const one = b.scalarF(1);
        if (kind === 'step-linf') {
          const v = b.op('Add', [f.xName, b.op('Mul', [b.op('Sign', [gx!]), alpha])]);
          const lo = b.op('Max', [b.op('Sub', [xc, eps]), zero]);
          const hi = b.op('Min', [b.op('Add', [xc, eps]), one]);
          out = b.op('Min', [b.op('Max', [v, lo]), hi]);
        } else {
          const axes = range(1, f.xShape.length);
          const tiny = b.scalarF(1e-12);
          const gn = b.op('Add', [b.reduce('ReduceL2', gx!, axes, true), tiny]);
          const v = b.op('Add', [f.xName, b.op('Mul', [b.op('Div', [gx!, gn]), alpha])]);
          const delta = b.op('Sub', [v, xc]);
          const dn = b.op('Add', [b.reduce('ReduceL2', delta, axes, true), tiny]);
          const scale = b.op('Min', [b.op('Div', [eps, dn]), one]);
          out = b.op('Clip', [b.op('Add', [xc, b.op('Mul', [delta, scale])]), zero, one]);
        }
      }
      t = { ...this.attackModel(f, b, [out, f.logits, ...(loss ? [loss] : [])], bake), baked: f.baked, xName: f.xName, xShape: f.xShape, grad: out, logits: f.logits, loss, classes };
    }
    this.attackTemplates.set(key, t);
    return t;
  }

  /** An attack model's bytes; without baking, its weight-only part split off (run once per weight set). */
  private attackModel(f: Forward, b: GraphBuilder, outputs: string[], bake: boolean): Pick<AttackTemplate, 'bytes' | 'paramInputs' | 'prep'> {
    const shapeOf = (n: string): number[] => this.p.params.get(n)!.shape;
    const m = finished(b, outputs);
    if (bake) return { bytes: m.toModel({ untypedOutputs: true }), paramInputs: [] };
    const split = splitWeightPrep(m, f.paramInputs, (prep, names) => {
      // the hoisted values' shapes, read off one run on zeros
      const probe = prep.clone('probe');
      const toBytes = (outputs: string[]): Uint8Array => {
        probe.setOutputs(outputs);
        return probe.toModel({ untypedOutputs: true });
      };
      const { shapes } = shapeRun(probe, names, [], toBytes, prep.inputs.map((i) => [i.name, shapeOf(i.name)]), this.threads);
      return new Map(names.map((n, k) => [n, shapes[k]!]));
    });
    if (!split) return { bytes: m.toModel({ untypedOutputs: true }), paramInputs: f.paramInputs.map((n) => [n, shapeOf(n)]) };
    const params = new Set(f.paramInputs);
    return {
      bytes: split.main.toModel({ untypedOutputs: true }),
      paramInputs: split.main.inputs.filter((i) => params.has(i.name)).map((i) => [i.name, shapeOf(i.name)]),
      prep: { bytes: split.prep.toModel({ untypedOutputs: true }), inputs: split.prep.inputs.map((i) => [i.name, shapeOf(i.name)]), outputs: split.hoisted },
    };
  }

  /**
   * A session for attacks with these weights: baked into a session of its own (onnxruntime folds and
   * pre-packs them, but the session is made anew for every set of weights), or the network's shared
   * session with the weights fed as inputs. Unless HYDRA_BAKE forces one, the first weight sets try both
   * (2 each) and the cheaper per weight set is kept, from the measured making and call times and the
   * number of calls one set of weights gets: a TRADES step makes 10 PGD calls and 1 forward on each, an evaluation thousands
   * on one (whose first set is baked and so stays).
   */
  attackSession(batch: number, kind: AttackKind, values: Map<string, Float32Array>): AttackSession {
    const key = `${batch}|${kind}`;
    let st = this.attackStats.get(key);
    if (!st) this.attackStats.set(key, (st = new BakeChoice()));
    const forced = process.env.HYDRA_BAKE;
    if (forced ? forced === '1' : st.nextBakes()) {
      const t = this.attackTemplate(batch, kind, true);
      const started = performance.now();
      const s = new SyncSession(withWeights(t.bytes, t.baked, values), { threads: this.threads });
      const made = performance.now() - started;
      st.made(made);
      return { key, s, t, baked: true, spent: made };
    }
    let shared = this.fedAttackSessions.get(key);
    if (!shared) {
      const t = this.attackTemplate(batch, kind, false);
      const prep = t.prep && new SyncSession(t.prep.bytes, { threads: this.threads });
      shared = { key, s: new SyncSession(t.bytes, { threads: this.threads }), t, baked: false, ...(prep ? { prep } : {}) };
      this.fedAttackSessions.set(key, shared);
    }
    return shared;
  }

  recordAttackPrep(a: AttackSession, ms: number): void {
    this.attackStats.get(a.key)?.prepped(ms);
  }

  recordAttackCall(a: AttackSession, ms: number): void {
    if (a.spent !== undefined) a.spent += ms;
    this.attackStats.get(a.key)?.called(a.baked, ms);
  }

  /** A FrozenNet is done with a session (after `calls` calls): a baked one is disposed; the timings go to the bake choice. */
  releaseAttackSession(a: AttackSession, calls: number): void {
    if (a.baked) a.s.dispose();
    this.attackStats.get(a.key)?.released(a.baked, calls, a.spent ?? 0);
  }

  private template(batch: number, o: CompiledRunOptions, bake: boolean): TrainTemplate {
    const key = `${configKey(batch, o)}|${bake}`;
    const hit = this.templates.get(key);
    if (hit) return hit;
    const needGrad = o.gradX || o.gradParams;
    const f = o.bounds ? boundsForward(this.p, batch, needGrad, bake, !!o.bounds.spec, this.threads) : emitForward(this.p, batch, o.training, needGrad, bake, o.bnGroups);
    const outputs = [f.logits, ...f.bnStats.flatMap((s) => [s.mean, s.var])];
    const used = [...f.paramInputs, ...f.baked.keys()];
    const gradParams = o.gradParams ? used.filter((n) => this.p.params.get(n)!.trainable) : [];
    // the parameters' gradients become tensors of the parameter's shape from their flat data (see run)
    const paramsFlat = (w: string): boolean => w !== f.xName;
    const t: TrainTemplate = { f, fBytes: new Uint8Array(), forwardOutputs: [], bBaked: new Map(), dyName: 'grad/logits', saved: [], fromInputs: [], gradOutputs: [], gradX: o.gradX, gradParams };
    if (needGrad && (o.ceTarget || o.trades) && !o.bounds) {
      // one graph: forward, dz = (softmax(z) − target)/N (or TRADES' dz), backward (the attack graphs' construction)
      const shapes = probeShapes(f, this.threads);
      const b = f.fb.clone('step');
      const classes = shapes.get(f.logits)!.at(-1)!;
      const dz = o.trades ? tradesLogitGrad(b, f.logits, batch / 2, classes)
        : b.op('Mul', [b.op('Sub', [b.op('Softmax', [f.logits], { axis: -1 }), b.input(CE_TARGET, 'float32', [batch, classes])]), b.input(CE_PER_N, 'float32', [])]);
      t.gradOutputs = differentiate(f, shapes, [...(o.gradX ? [f.xName] : []), ...gradParams], { bb: b, fwdValue: (v) => v, dlogits: dz, flat: paramsFlat });
      t.forwardOutputs = [...new Set([...outputs, ...t.gradOutputs])];
      t.fBytes = modelBytes(b, t.forwardOutputs);
      t.fused = true;
      this.templates.set(key, t);
      return t;
    }
    if (needGrad) {
      const dtypes = new Map<string, 'float32' | 'int64' | 'int32' | 'bool'>();
      const shapes = probeShapes(f, this.threads, dtypes);
      const bb = new GraphBuilder(COMPILED_OPSET, 'bwd');
      bb.input(t.dyName, 'float32', shapes.get(f.logits)!);
      const inputLike = new Set([f.xName, ...f.extraInputs, ...f.paramInputs, ...f.dropMasks.map((d) => d.name)]);
      const seen = new Set<string>();
      const fwdValue = (v: string): string => {
        if (seen.has(v)) return v;
        seen.add(v);
        const c = f.consts.get(v);
        if (c) bb.init(v, c);
        else if (f.baked.has(v)) {
          bb.reserve(v);
          t.bBaked.set(v, f.baked.get(v)!);
        } else if (inputLike.has(v)) {
          bb.input(v, 'float32', shapes.get(v)!);
          t.fromInputs.push(v);
        } else {
          bb.input(v, v.endsWith('/argmax') ? 'int64' : dtypes.get(v) ?? 'float32', shapes.get(v)!);
          t.saved.push(v);
        }
        return v;
      };
      t.gradOutputs = differentiate(f, shapes, [...(o.gradX ? [f.xName] : []), ...gradParams], { bb, fwdValue, dlogits: t.dyName, flat: paramsFlat });
      outputs.push(...t.saved);
      t.bBytes = modelBytes(bb, t.gradOutputs);
    }
    t.forwardOutputs = [...new Set(outputs)];
    t.fBytes = modelBytes(f.fb, t.forwardOutputs);
    this.templates.set(key, t);
    return t;
  }

  private trainable(batch: number, o: CompiledRunOptions, params: Map<string, tf.Tensor>): { t: TrainTemplate; s: TrainSessions } {
    const bake = o.bake !== false;
    const t = this.template(batch, o, bake);
    const key = `${configKey(batch, o)}|${bake}`;
    const ids = bake ? [...t.f.baked.keys()].map((n) => (params.get(n) as unknown as { dataId: unknown } | undefined)?.dataId) : undefined;
    const hit = this.sessions.get(key);
    this.disposeRetired();
    if (hit && (!bake || hit.ids!.every((id, i) => id === ids![i]))) return { t, s: hit };
    if (hit) this.retire(hit);
    const values = new Map<string, Float32Array>();
    if (bake) for (const n of t.f.baked.keys()) values.set(n, params.get(n)!.dataSync() as Float32Array);
    const s: TrainSessions = {
      ids,
      forward: new SyncSession(withWeights(t.fBytes, t.f.baked, values), { threads: this.threads }),
      backward: t.bBytes ? new SyncSession(withWeights(t.bBytes, t.bBaked, values), { threads: this.threads }) : undefined,
    };
    this.sessions.set(key, s);
    return { t, s };
  }

  /**
   * Sessions replaced by newer weights. A forward pass recorded on a gradient tape keeps its session for
   * the backward pass, which runs only when the tape's gradients are taken: a second forward of the same
   * tape with other weight tensors (TRADES' clean and adversarial passes, each computing masked weights
   * anew) must not dispose the session the first one will need. A retired session is disposed once the
   * tape it was retired on has finished.
   */
  private retired: { s: TrainSessions; tape: unknown }[] = [];

  private retire(s: TrainSessions): void {
    const tape = activeTape();
    if (tape === undefined) disposeTrainSessions(s);
    else this.retired.push({ s, tape });
  }

  private disposeRetired(): void {
    const current = activeTape();
    for (const r of this.retired) if (r.tape !== current) disposeTrainSessions(r.s);
    this.retired = this.retired.filter((r) => r.tape === current);
  }

  /** Compile a configuration now (throws NotCompilableError when some op cannot be differentiated). */
  prepare(batch: number, o: CompiledRunOptions): void {
    this.template(batch, o, o.bake !== false);
  }

  /**
   * Logits of x with the given parameter values (tf tensors: variables, or masked weights); the result
   * carries gradients to x and to the trainable parameters, as requested in `o`. Returns the
   * running-statistics updates of training mode.
   */
  /**
   * Bake or not: baked weights let onnxruntime pre-pack convolutions but cost new sessions per weight
   * update. Unless told, the first passes of each configuration try both (PassBakeChoice).
   */
  private chooseBake(key: string, o: CompiledRunOptions): { bake: boolean; record?: (ms: number) => void } {
    if (o.bake !== undefined) return { bake: o.bake };
    if (process.env.HYDRA_BAKE) return { bake: process.env.HYDRA_BAKE === '1' };
    let st = this.bakeStats.get(key);
    if (!st) this.bakeStats.set(key, (st = new PassBakeChoice()));
    const bake = st.nextBakes();
    // undecided passes are timed for the choice, and baked passes after a baked choice for its trial
    return { bake, ...(st.choice === false ? {} : { record: (ms: number) => st!.passed(bake, ms) }) };
  }

  /** Which weight handling each configuration settled on (for reports). */
  bakeChoices(): Record<string, boolean | undefined> {
    return Object.fromEntries([...[...this.bakeStats].map(([k, v]) => [k, v.choice] as const), ...[...this.attackStats].map(([k, v]) => [`attack ${k}`, v.choice] as const)]);
  }

  /** Feeds of a forward model: the input, parameters fed as inputs, Dropout masks, bound inputs. */
  private feeds(f: Forward, x: tf.Tensor, params: Map<string, tf.Tensor>, masks: Float32Array[], o: CompiledRunOptions): Record<string, Feed> {
    const feeds: Record<string, Feed> = { [f.xName]: { data: x.dataSync() as Float32Array, shape: x.shape } };
    for (const n of f.paramInputs) {
      const v = params.get(n);
      if (!v) throw new Error(`no value for parameter '${n}'`);
      feeds[n] = { data: v.dataSync() as Float32Array, shape: v.shape };
    }
    f.dropMasks.forEach((d, i) => (feeds[d.name] = { data: masks[i]!, shape: d.shape }));
    for (const e of f.extraInputs) {
      feeds[e] = e === BOUNDS_SPEC ? { data: o.bounds!.spec!, shape: [x.shape[0]!, f.classes, f.classes] } : { data: Float32Array.of(o.bounds?.eps ?? 0), shape: [] };
    }
    return feeds;
  }

  /** Gradients for a given dlogits by the two-call path (forward keeping activations, then backward). */
  private backwardAt(x: tf.Tensor, params: Map<string, tf.Tensor>, o: CompiledRunOptions, masks: Float32Array[], dy: Float32Array, dyShape: number[]): OrtOut[] {
    const { t, s } = this.trainable(x.shape[0]!, o, params);
    const feeds = this.feeds(t.f, x, params, masks, o);
    const outs = s.forward.run(feeds, t.forwardOutputs);
    return runBackward(t, s, new Map(t.forwardOutputs.map((n, i) => [n, outs[i]!])), feeds, dy, dyShape);
  }

  /**
   * backwardAt for a fused pass whose gradient turned out different: x and the parameter values as the
   * forward read them, in tensors of their own (the caller's may be intermediates of a tape's forward
   * function, which tfjs disposes before the backward pass).
   */
  private backwardAfterFused(xData: Float32Array, xShape: number[], values: Map<string, { data: Float32Array; shape: number[] }>, o: CompiledRunOptions, masks: Float32Array[], dy: Float32Array, dyShape: number[]): OrtOut[] {
    const x = tf.tensor(xData, xShape);
    const params = new Map([...values].map(([k, v]) => [k, tf.tensor(v.data, v.shape)]));
    try {
      return this.backwardAt(x, params, o, masks, dy, dyShape);
    } finally {
      tf.dispose([x, ...params.values()]);
    }
  }

  run(x: tf.Tensor, params: Map<string, tf.Tensor>, o: CompiledRunOptions): { logits: tf.Tensor; updates: Map<string, tf.Tensor> } {
    const cfgKey = configKey(x.shape[0]!, o);
    const { bake, record } = this.chooseBake(cfgKey, o);
    const started = performance.now();
    let spent = 0;
    const { t, s } = this.trainable(x.shape[0]!, { ...o, bake }, params);
    spent += performance.now() - started;
    const f = t.f;
    const masks = f.dropMasks.map((d) => {
      const rng = seedrandom(`${o.seed ?? this.step++}:${d.name}`);
      const m = new Float32Array(numel(d.shape));
      const keep = 1 / (1 - d.ratio);
      for (let i = 0; i < m.length; i++) m[i] = rng() >= d.ratio ? keep : 0;
      return m;
    });
    // only the tensors whose gradients are wanted enter the custom op; the others are read directly
    const diffInputs: tf.Tensor[] = [...(t.gradX ? [x] : []), ...t.gradParams.map((n) => params.get(n)!)];
    let stats: OrtOut[] = [];
    // a fused pass keeps what its rare recomputation would read (references to the arrays, no copies)
    let values: Map<string, { data: Float32Array; shape: number[] }> | undefined;
    const compute = (): { value: tf.Tensor; byName: Map<string, OrtOut>; feeds: Record<string, Feed> } => {
      const c0 = performance.now();
      const feeds = this.feeds(f, x, params, masks, o);
      if (t.fused) {
        values = new Map([...params].map(([k, v]) => [k, { data: v.dataSync() as Float32Array, shape: v.shape }]));
        if (o.trades) {
          feeds[TRADES_LABELS] = { data: o.trades.labels, shape: [x.shape[0]! / 2, f.classes] };
          feeds[TRADES_BETA] = { data: Float32Array.of(o.trades.beta), shape: [] };
          feeds[TRADES_PER_N] = { data: Float32Array.of(2 / x.shape[0]!), shape: [] };
        } else {
          feeds[CE_TARGET] = { data: o.ceTarget!, shape: [x.shape[0]!, f.classes] };
          feeds[CE_PER_N] = { data: Float32Array.of(1 / x.shape[0]!), shape: [] };
        }
      }
      const outs = s.forward.run(feeds, t.forwardOutputs);
      const byName = new Map(t.forwardOutputs.map((n, i) => [n, outs[i]!]));
      const lo = byName.get(f.logits)!;
      stats = f.bnStats.flatMap((b) => [byName.get(b.mean)!, byName.get(b.var)!]);
      spent += performance.now() - c0;
      if (!diffInputs.length || t.fused) record?.(spent);
      return { value: tf.tensor(lo.data as Float32Array, lo.shape), byName, feeds };
    };
    let logits: tf.Tensor;
    if (!diffInputs.length) logits = compute().value;
    else {
      const op = tf.customGrad((...args: unknown[]) => {
        void args;
        const { value, byName, feeds } = compute();
        const gradFunc = (dy: tf.Tensor): tf.Tensor[] => {
          const dyData = dy.dataSync() as Float32Array;
          let gs: OrtOut[];
          const z = byName.get(f.logits)!.data as Float32Array;
          if (t.fused && gradientMatches(dyData, o.trades ? tradesLogitGradOf(z, o.trades.labels, o.trades.beta, f.classes) : ceLogitGrad(z, o.ceTarget!, f.classes))) {
            gs = t.gradOutputs.map((n) => byName.get(n)!);
          } else if (t.fused) {
            // the loss was not the announced one: the two-call path with the gradient that arrived
            gs = this.backwardAfterFused(feeds[f.xName]!.data as Float32Array, x.shape, values!, { ...o, ceTarget: undefined, trades: undefined, bake }, masks, dyData, dy.shape);
          } else {
            const b0 = performance.now();
            gs = runBackward(t, s, byName, feeds, dyData, dy.shape);
            record?.(spent + performance.now() - b0);
          }
          return diffInputs.map((d, i) => tf.tensor(gs[i]!.data as Float32Array, d.shape));
        };
        return { value, gradFunc };
      });
      logits = op(...diffInputs) as tf.Tensor;
    }
    const updates = new Map<string, tf.Tensor>();
    f.bnStats.forEach((b, i) => {
      const rm = params.get(b.runMean)!;
      const rv = params.get(b.runVar)!;
      updates.set(b.runMean, tf.add(tf.mul(rm, b.momentum), tf.mul(tf.tensor(stats[2 * i]!.data as Float32Array, rm.shape), 1 - b.momentum)));
      updates.set(b.runVar, tf.add(tf.mul(rv, b.momentum), tf.mul(tf.tensor(stats[2 * i + 1]!.data as Float32Array, rv.shape), 1 - b.momentum)));
    });
    return { logits, updates };
  }

  /**
   * The network with the given weights frozen (baked into fused attack models). Cached while the same
   * tensors are passed, so the inner loop of adversarial training makes its sessions once per weight update.
   */
  frozen(params: Map<string, tf.Tensor>): FrozenNet {
    const names = [...this.p.params.keys()];
    const ids = names.map((n) => (params.get(n) as unknown as { dataId: unknown } | undefined)?.dataId);
    if (this.frozenNet && this.frozenNet.ids.every((id, i) => id === ids[i])) return this.frozenNet.net;
    this.frozenNet?.net.dispose();
    const values = new Map<string, Float32Array>();
    for (const n of names) {
      const t = params.get(n);
      if (t) values.set(n, t.dataSync() as Float32Array);
    }
    const net = new FrozenNet(this, values);
    this.frozenNet = { ids, net };
    return net;
  }

  dispose(): void {
    for (const c of [...this.sessions.values(), ...this.retired.map((r) => r.s)]) disposeTrainSessions(c);
    this.sessions.clear();
    this.retired = [];
    this.frozenNet?.net.dispose();
    this.frozenNet = undefined;
    for (const a of this.fedAttackSessions.values()) {
      a.s.dispose();
      a.prep?.dispose();
    }
    this.fedAttackSessions.clear();
  }
}
