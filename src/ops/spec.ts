// One spec per ONNX operator: everything onnx-hydra knows about it, in one object. The forward (tfjs, and
// exact host arithmetic for shape chains), the gradient rule the compiled engine emits, how interval (IBP)
// and linear (CROWN) bounds pass through it, which inputs are parameters, and what the int8 export
// quantizes. Families of operators live in one module each (elementwise, shape, nn, reduce); the registry
// below rejects a second spec for the same operator.
import type { NodeProto } from '../onnx/proto.js';
import type { GraphBuilder } from '../onnx/builder.js';
import type { Attrs, Node } from './ir.js';
import type { OpCtx, Val } from './values.js';

/** Opset of the compiled engine's graphs: gradient and bound rules see nodes lowered to it (engine/compile/normalize). */
export const COMPILED_OPSET = 18;

// ---- forward ----------------------------------------------------------------------------------------
export interface ForwardRule {
  /** Why this particular node cannot be converted (an attribute value we do not implement); checked before any work. */
  unsupported?(node: Node, opset: number): string | undefined;
  /** Compute the outputs. Inputs may be host tensors (constants, shape chains) or tfjs tensors. */
  run(c: OpCtx): Val[];
}

// ---- gradient ---------------------------------------------------------------------------------------
/** What a gradient rule sees: the node (normalized to opset 18, see engine/compile/normalize), names in the backward graph, static shapes. */
export interface GradCtx {
  b: GraphBuilder;
  node: Node;
  a: Attrs;
  /** backward-graph name of forward input i (saved from the forward pass) */
  x(i: number): string;
  /** backward-graph name of forward output k (saved from the forward pass) */
  y(k: number): string;
  /** gradient flowing into output k, if any */
  dy(k: number): string | undefined;
  inShape(i: number): number[];
  outShape(k: number): number[];
  /** does input i need a gradient? */
  need(i: number): boolean;
  /** a constant input's value as numbers (axes, shapes, pads) */
  ints(i: number): number[];
  has(i: number): boolean;
  /**
   * Convolutions whose weights are graph values will run on blocked-layout kernels (the engine's NCHWc pass)
   * when batch x output pixels reaches BLOCKED_CONV_MIN_WORK: rules pick their cheapest form for that target.
   */
  blockedConvs: boolean;
}

/** The work (batch x output pixels) from which a convolution with computed weights runs blocked (see GradCtx). */
export const BLOCKED_CONV_MIN_WORK = 256;
/**
 * The same for a convolution whose kernel has more taps than its output has pixels: the convolution form of a
 * filter gradient (nn.ts convFilterGrad), whose "batch" is the input channels, its output the K x K taps and its
 * kernel the whole output gradient. Each output then sums N·OH·OW products, and onnxruntime's plain kernel
 * makes a column buffer of that many rows per tap: blocked, a 3x3 16→16 layer on 28x28 maps at batch 128
 * took a ResNet step from 245-247 to 227-238 ms (2-vCPU AMD EPYC Zen 1, AVX2).
 */
export const BLOCKED_FILTER_GRAD_MIN_WORK = 128;

/**
 * A subgraph that an operator's lowering emitted with its own gradient rule (BatchNormalization in training
 * mode): the differentiator skips its nodes and asks `grad` for the gradients of `inputs`, given the gradient
 * of `output`; `fwd` maps a forward value to its name in the backward graph, `need` says which inputs want one.
 */
export interface GradRegion {
  /** indices of its first and last node in the forward builder */
  first: number;
  last: number;
  inputs: string[];
  output: string;
  grad(b: GraphBuilder, dy: string, fwd: (v: string) => string, need: (i: number) => boolean): (string | undefined)[];
}

/** ONNX nodes computing the gradients of the inputs (one per input, undefined for none) from those of the outputs. */
export type GradRule = (g: GradCtx) => (string | undefined)[];
/** No gradient flows through the operator, and why (integer or piecewise-constant output, no data input). */
export interface NoGradient { none: string }

// ---- bounds -----------------------------------------------------------------------------------------
/** An interval over a value of the bound graph: lower/upper, or centre/radius (affine layers keep the latter). */
export interface Interval { l?: string; u?: string; c?: string; r?: string }

/** What an interval rule sees while the forward graph is rewritten into its interval graph. */
export interface IbpCtx {
  b: GraphBuilder;
  node: Node;
  proto: NodeProto;
  a: Attrs;
  /** which inputs depend on the perturbed input (the others are constants or parameters) */
  dep: boolean[];
  /** lower and upper bound names of an input-dependent value */
  lu(v: string): [string, string];
  /** centre and radius names of an input-dependent value */
  cr(v: string): [string, string];
  /** |w| of a constant, emitted once */
  abs(w: string): string;
  /** this node again, with other inputs, outputs and (optionally) attributes */
  emit(inputs: string[], outputs: string[], attribute?: NodeProto['attribute']): void;
  set(output: string, iv: Interval): void;
  fail(why: string): never;
  shapeOf(v: string): number[];
}
export type IbpRule = (c: IbpCtx) => void;

/**
 * Linear bounds (CROWN): 'relu' is relaxed by two lines; 'max-window' (MaxPool) by the window's element with
 * the largest lower bound below and the largest upper bound above; other operators must be linear or
 * affine in their input-dependent operand, so the backward pass of the bounds is their gradient rule.
 * `offset` says when the node adds a constant f(0) that the bound must carry; `unsupported` rejects a
 * configuration up front.
 */
export type CrownRule = 'relu' | 'max-window' | {
  offset?(node: Node, dep: boolean[]): boolean;
  unsupported?(node: Node, dep: boolean[]): string | undefined;
};

export interface BoundRules {
  /** 'monotone': [l, u] ↦ [f(l), f(u)] (non-decreasing in its data inputs, or pure data movement) */
  ibp: 'monotone' | IbpRule;
  /** only input 0 carries data; an input-dependent shape, index or pad input is rejected */
  dataInput0?: boolean;
  crown?: CrownRule;
}

// ---- parameters and quantization -------------------------------------------------------------------
export type ParamRole = 'weight' | 'bias' | 'scale' | 'running_mean' | 'running_var' | 'slope';

export interface ParamSlots {
  /** [input slot, role, prunable] */
  slots: [number, ParamRole, boolean][];
  /** x·W products: whichever operand is a constant matrix is the weight, a constant added to the product its bias */
  constantOperand?: boolean;
  /** fan-in of the prunable weight (HYDRA's score initialisation), from its shape */
  fanIn?(weightShape: number[], node: Node): number;
}

/** The int8 export's target: which input is the weight and its per-output-channel axis (undefined: leave in float). */
export type QuantRule = (node: NodeProto, isConst: (name: string) => boolean, dims: (name: string) => number[]) => { weightInput: number; axis: number } | undefined;

// ---- the spec ---------------------------------------------------------------------------------------
export interface OpSpec {
  type: string;
  forward: ForwardRule;
  grad: GradRule | NoGradient;
  bounds?: BoundRules;
  params?: ParamSlots;
  /** a parameter read through this op (Identity, Reshape, …) is still the layer's parameter */
  paramPassThrough?: boolean;
  quant?: QuantRule;
}

const REGISTRY = new Map<string, OpSpec>();

/** Register an operator's spec; a second spec for the same operator is a programming error. */
export function defineOp(spec: OpSpec): void {
  if (REGISTRY.has(spec.type)) throw new Error(`operator ${spec.type} is defined twice`);
  REGISTRY.set(spec.type, spec);
}

/** The spec of a standard-domain operator, if onnx-hydra has one. */
export function opSpec(opType: string, domain = ''): OpSpec | undefined {
  if (domain !== '' && domain !== 'ai.onnx') return undefined;
  return REGISTRY.get(opType);
}

export function opTypes(): string[] {
  return [...REGISTRY.keys()].sort();
}

/** The reason a node cannot be converted, or undefined when it can. */
export function unsupportedReason(node: Node, opset: number): string | undefined {
  if (node.domain !== '' && node.domain !== 'ai.onnx') return `custom domain '${node.domain}'`;
  const spec = REGISTRY.get(node.opType);
  if (!spec) return 'no converter for this op';
  return spec.forward.unsupported?.(node, opset);
}

export function gradRuleOf(opType: string): GradRule | undefined {
  const g = REGISTRY.get(opType)?.grad;
  return typeof g === 'function' ? g : undefined;
}

/** What onnx-hydra can do with an operator type: the row of `inspect`'s capability table. */
export interface Capabilities {
  converts: boolean;
  /** 'rule', or why no gradient flows ('none: …'); undefined when unknown */
  grad?: { kind: 'rule' } | { kind: 'none'; reason: string };
  ibp: boolean;
  crown: boolean;
  quantizes: boolean;
}

export function capabilities(opType: string): Capabilities {
  const s = REGISTRY.get(opType);
  if (!s) return { converts: false, ibp: false, crown: false, quantizes: false };
  return {
    converts: true,
    grad: typeof s.grad === 'function' ? { kind: 'rule' } : { kind: 'none', reason: s.grad.none },
    ibp: !!s.bounds,
    crown: !!s.bounds?.crown,
    quantizes: !!s.quant,
  };
}
