// Bounds of the flattened outputs over explicit input boxes [lower, upper] (not an ε-ball): the inference
// forward graph of the prepared model (weights as initializers), rewritten by emitBounds with the input box
// given as the inputs `bounds/lower`, `bounds/upper`. With CROWN (ReLU networks), also CROWN lower bounds
// of spec·Y for a spec of K rows per slot (K = number of outputs), which is how linear output constraints
// are bounded. Runs on onnxruntime with a fixed number of slots per call.
import type { PreparedGraph } from '../../graph/graph.js';
import { GraphBuilder } from '../../onnx/builder.js';
import { hostTensor, numberAt, type HostTensor } from '../../onnx/tensor.js';
import { COMPILED_OPSET } from '../../ops/index.js';
import { emitNormalized, shapeLookup } from '../../engine/compile/normalize.js';
import { BOUNDS_LOWER, BOUNDS_OUT, BOUNDS_SPEC, BOUNDS_UPPER, BoundsUnsupportedError, emitBounds } from '../../engine/compile/bounds.js';
import { NotCompilableError } from '../../engine/compile/errors.js';
import { SyncSession } from '../../engine/ort-sync.js';

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

interface InferenceForward {
  fb: GraphBuilder;
  xName: string;
  /** the first output reshaped to [batch, outputs] */
  y: string;
  outputs: number;
  shapeOf: (name: string) => number[];
  /** shapes of the graph's inputs and initializers */
  known: Map<string, number[]>;
}

/**
 * The inference-mode forward graph at a batch size, as the compiled engine emits it (opset-18 nodes,
 * Dropout as Identity; compile.ts keeps its own emitForward private), with the weights as initializers and
 * the output flattened per example.
 */
function emitInferenceForward(p: PreparedGraph, batch: number): InferenceForward {
  if (p.inputs.length !== 1) throw new NotCompilableError('more than one graph input');
  const inp = p.inputs[0]!;
  const fb = new GraphBuilder(COMPILED_OPSET, 'fwd');
  const lookup = shapeLookup(p, batch);
  const known = new Map<string, number[]>();
  const xShape = lookup(inp.name);
  fb.input(inp.name, 'float32', xShape);
  known.set(inp.name, xShape);
  const used = new Set<string>();
  for (const n of p.runNodes) for (const i of n.inputs) if (i) used.add(i);
  const consts = new Map<string, HostTensor>();
  for (const name of used) {
    const w = p.paramInit.get(name);
    if (w) {
      // (the engine runs in float32, whatever the file stores its weights in)
      fb.init(name, w.dtype === 'float32' ? w : hostTensor('float32', w.shape, Float32Array.from({ length: numel(w.shape) }, (_, i) => numberAt(w, i))));
      known.set(name, w.shape);
      continue;
    }
    const c = p.constantAt(name, batch);
    if (c) {
      consts.set(name, c);
      fb.init(name, c);
      known.set(name, c.shape);
    }
  }
  for (const n of p.runNodes) {
    if (n.opType === 'Dropout') fb.add('Identity', [n.inputs[0]!], {}, [n.outputs[0]!]);
    else emitNormalized(fb, n, p.opset, consts, lookup);
  }
  const out = p.outputs[0]!;
  const outShape = lookup(out);
  const outputs = numel(outShape.slice(1));
  const y = outShape.length === 2 ? out : fb.reshape(out, [batch, outputs]);
  const shapeOf = (name: string): number[] => (name === y ? [batch, outputs] : lookup(name));
  return { fb, xName: inp.name, y, outputs, shapeOf, known };
}

/** Shapes of every value of the forward graph, by running it once on zeros (CROWN's back-substitution needs them). */
function probeShapes(f: InferenceForward): Map<string, number[]> {
  const names: string[] = [];
  for (const n of f.fb.nodes) for (const o of n.output ?? []) if (o) names.push(o);
  f.fb.setOutputs(names);
  const s = new SyncSession(f.fb.toModel({ untypedOutputs: true }), { optimization: 'disabled' });
  try {
    const xs = f.known.get(f.xName)!;
    const r = s.run({ [f.xName]: { data: new Float32Array(numel(xs)), shape: xs } }, names);
    const shapes = new Map(f.known);
    names.forEach((n, k) => shapes.set(n, r[k]!.shape));
    return shapes;
  } finally {
    s.dispose();
  }
}

export interface BoxBoundsResult {
  /** interval bounds of Y per slot, [slots, outputs] each */
  lower: Float32Array;
  upper: Float32Array;
  /** CROWN lower bounds of spec·Y, [slots, outputs] (row r of slot s: spec[s, r, :]·Y) */
  crown?: Float32Array;
}

/** ReLU layers with at most this many neurons per example get pre-activation bounds of their own CROWN pass */
const CROWN_NEURONS = 1024;
/** the largest coefficient tensor of a bound call, in floats (CROWN passes carry rows × activation size per slot) */
const MAX_COEFFICIENTS = 2 ** 24;

/**
 * Slots per call for a model (free batch dimension): up to `max`, so that the coefficient rows of CROWN (2m per
 * ReLU layer of m ≤ CROWN_NEURONS neurons, K for the outputs) times the widest activation fit MAX_COEFFICIENTS.
 */
function slotsFor(p: PreparedGraph, max: number): number {
  const size = (s: readonly (number | string)[] | undefined): number => (s ?? []).slice(1).reduce<number>((a, d) => a * (typeof d === 'number' ? d : 1), 1);
  let rows = size(p.shapes.get(p.outputs[0]!));
  let widest = size(p.inputs[0]!.shape);
  for (const n of p.runNodes) {
    for (const o of n.outputs) widest = Math.max(widest, size(p.shapes.get(o)));
    const m = n.opType === 'Relu' ? size(p.shapes.get(n.inputs[0]!)) : 0;
    if (m <= CROWN_NEURONS) rows = Math.max(rows, 2 * m);
  }
  return Math.max(1, Math.min(max, Math.floor(MAX_COEFFICIENTS / (rows * widest))));
}

/** Bound and forward sessions for boxes of one model at a fixed number of slots per call. */
export class BoxBounds {
  private constructor(
    private readonly bounds: SyncSession,
    private readonly forward: SyncSession,
    readonly slots: number,
    readonly xShape: number[],
    readonly outputs: number,
    private readonly xName: string,
    private readonly y: string,
    /** e.g. 'CROWN + IBP', 'CROWN-IBP + IBP', or 'IBP' with the reason CROWN is unavailable */
    readonly method: string,
  ) {}

  /**
   * Bound graphs at up to `maxSlots` boxes per call (1 when the batch dimension is fixed): CROWN with CROWN
   * pre-activation bounds where the layers are small enough, else CROWN-IBP, else IBP alone. Throws
   * BoundsUnsupportedError / NotCompilableError (with the reason) when interval bounds cannot go through the model.
   */
  static build(p: PreparedGraph, maxSlots: number): BoxBounds {
    const slots = p.batchFree ? slotsFor(p, maxSlots) : 1;
    const f = emitInferenceForward(p, slots);
    const base = { shapes: probeShapes(f), batch: slots, classes: f.outputs };
    const layers = { crownLayers: 0, ibpLayers: 0 };
    let b: GraphBuilder | undefined;
    let method = '';
    let why = '';
    for (const [crown, name] of [[{ ...base, intermediate: CROWN_NEURONS, stats: layers, maxPool: true }, 'CROWN'], [base, 'CROWN-IBP']] as const) {
      try {
        b = emitBounds(f.fb, f.xName, f.y, f.shapeOf, crown, false, 'explicit');
        method = name === 'CROWN' && layers.ibpLayers ? `CROWN (IBP pre-activation bounds for ${layers.ibpLayers} of ${layers.crownLayers + layers.ibpLayers} ReLU layers) + IBP` : `${name} + IBP`;
        break;
      } catch (e) {
        if (!(e instanceof BoundsUnsupportedError || e instanceof NotCompilableError)) throw e;
        why = e.message;
        layers.crownLayers = layers.ibpLayers = 0;
      }
    }
    if (!b) {
      method = `IBP (no CROWN: ${why})`;
      b = emitBounds(f.fb, f.xName, f.y, f.shapeOf, undefined, false, 'explicit');
    }
    const bounds = new SyncSession(b.toModel({ untypedOutputs: true }));
    f.fb.setOutputs([f.y]);
    const forward = new SyncSession(f.fb.toModel({ untypedOutputs: true }));
    return new BoxBounds(bounds, forward, slots, f.shapeOf(f.xName), f.outputs, f.xName, f.y, method);
  }

  get hasCrown(): boolean {
    return this.method.startsWith('CROWN');
  }

  /** Bounds over `slots` boxes (lower/upper [slots, …input]); spec [slots, outputs, outputs] is used by CROWN. */
  run(lower: Float32Array, upper: Float32Array, spec: Float32Array): BoxBoundsResult {
    const k = this.outputs;
    const n = this.slots;
    const feeds: Record<string, { data: Float32Array; shape: number[] }> = {
      [BOUNDS_LOWER]: { data: lower, shape: this.xShape },
      [BOUNDS_UPPER]: { data: upper, shape: this.xShape },
    };
    if (this.hasCrown) feeds[BOUNDS_SPEC] = { data: spec, shape: [n, k, k] };
    const [out] = this.bounds.run(feeds, [BOUNDS_OUT]);
    const d = out!.data as Float32Array;
    return { lower: d.slice(0, n * k), upper: d.slice(n * k, 2 * n * k), crown: this.hasCrown ? d.slice(2 * n * k, 3 * n * k) : undefined };
  }

  /** The flattened outputs at `slots` points (the same graph the bounds were made from). */
  outputsAt(x: Float32Array): Float32Array {
    return this.forward.run({ [this.xName]: { data: x, shape: this.xShape } }, [this.y])[0]!.data as Float32Array;
  }

  dispose(): void {
    this.bounds.dispose();
    this.forward.dispose();
  }
}
