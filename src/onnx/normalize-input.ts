// `--mean/--std`: a model trained on normalised inputs becomes one that takes pixels in [0,1], by putting
// (x − mean)/std per channel in front of its graph. ε, clipping and attacks then stay in pixel space,
// and exported models carry their normalisation with them.
import { cloneModel, realInputs, type OnnxModel } from './model.js';
import { encodeTensor, hostTensor } from './tensor.js';
import { UserError } from '../util/errors.js';

export function parseChannels(flag: string, v: unknown): number[] | undefined {
  if (v === undefined || v === '') return undefined;
  const a = String(v).split(',').map((s) => Number(s.trim()));
  if (!a.length || a.some((x) => !Number.isFinite(x))) throw new UserError(`--${flag} expects one number per channel, e.g. 0.4914,0.4822,0.4465; got '${v}'`);
  return a;
}

export function withInputNormalization(source: OnnxModel, mean: number[] | undefined, std: number[] | undefined): OnnxModel {
  if (!mean && !std) return source;
  const model = cloneModel(source);
  const g = model.proto.graph!;
  const inputs = realInputs(g);
  if (inputs.length !== 1) throw new UserError(`--mean/--std: the model has ${inputs.length} inputs; expected one image input`);
  const name = inputs[0]!.name!;
  const dims = inputs[0]!.type?.tensorType?.shape?.dim ?? [];
  const c = Number(dims[1]?.dimValue ?? 0) || Math.max(mean?.length ?? 1, std?.length ?? 1);
  const m = mean ?? [0];
  const s = std ?? [1];
  for (const [flag, v] of [['mean', m], ['std', s]] as const) {
    if (v.length !== 1 && v.length !== c) throw new UserError(`--${flag} has ${v.length} values, the model input has ${c} channels`);
  }
  if (s.some((x) => !(x > 0))) throw new UserError('--std values must be > 0');
  const per = (v: number[]): number[] => Array.from({ length: c }, (_, i) => v[v.length === 1 ? 0 : i]!);
  const inner = `${name}/normalized`;
  for (const n of g.node ?? []) n.input = (n.input ?? []).map((i) => (i === name ? inner : i));
  g.initializer!.push(encodeTensor(`${name}/mean`, hostTensor('float32', [1, c, 1, 1], per(m))));
  g.initializer!.push(encodeTensor(`${name}/std`, hostTensor('float32', [1, c, 1, 1], per(s))));
  g.node!.unshift(
    { opType: 'Sub', name: `${name}/Sub_mean`, input: [name, `${name}/mean`], output: [`${name}/centered`] },
    { opType: 'Div', name: `${name}/Div_std`, input: [`${name}/centered`, `${name}/std`], output: [inner] },
  );
  return model;
}
