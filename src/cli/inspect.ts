import type { CommandModule } from 'yargs';
import { loadModel } from '../onnx/model.js';
import { summarize } from '../graph/analyze.js';
import { capabilities as opCapabilities } from '../ops/index.js';
import { fmtInt, parseInputShapes, pct, printJson, table, withModelOptions } from './common.js';

interface Args { model: string; json: boolean; 'input-shape'?: string[] }

/** What onnx-hydra can do with each operator type of a model. */
export interface OpCapability {
  op: string;
  nodes: number;
  /** the converter implements it (attribute-specific limits show in `supported` above) */
  converts: boolean;
  /** the compiled engine differentiates it: 'rule', 'no gradient (<why>)', or 'per-op tfjs fallback' */
  gradient: string;
  ibp: boolean;
  crown: boolean;
  /** its weights become int8 in a QDQ export */
  int8_weights: boolean;
}

export function capabilities(histogram: Record<string, number>): OpCapability[] {
  return Object.entries(histogram).sort((a, b) => b[1] - a[1]).map(([op, nodes]) => {
    const c = opCapabilities(op);
    return {
      op, nodes, converts: c.converts,
      gradient: !c.grad ? 'per-op tfjs fallback' : c.grad.kind === 'rule' ? 'rule' : `no gradient (${c.grad.reason})`,
      ibp: c.ibp, crown: c.crown, int8_weights: c.quantizes,
    };
  });
}

export const inspectCommand: CommandModule<object, Args> = {
  command: 'inspect <model>',
  describe: 'opset, inputs/outputs, op histogram, parameters and sparsity per prunable layer, and whether onnx-hydra can convert it',
  builder: (y) => withModelOptions(y) as never,
  handler: (args) => {
    const model = loadModel(args.model);
    const s = summarize(model, { inputShapes: parseInputShapes(args['input-shape'], undefined) });
    const ops = capabilities(s.op_histogram);
    if (args.json) return printJson({ ...s, operators: ops });
    const shape = (d: (number | string)[]) => `[${d.join(',')}]`;
    const lines: string[] = [];
    lines.push(`model     ${args.model}  (${fmtInt(s.bytes)} bytes, sha256 ${s.sha256.slice(0, 16)}…)`);
    lines.push(`producer  ${s.producer || 'unknown'}, IR ${s.ir_version}, opsets ${Object.entries(s.opsets).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    for (const i of s.inputs) lines.push(`input     ${i.name}  ${i.dtype} ${shape(i.shape)}`);
    for (const o of s.outputs) lines.push(`output    ${o.name}  ${o.dtype} ${shape(o.shape)}`);
    lines.push(`ops       ${s.nodes} nodes: ${Object.entries(s.op_histogram).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}×${v}`).join(' ')}`);
    if (s.quantized) lines.push('int8      QDQ model: supported, parameters and sparsity are those of its float graph (dequantised weights)');
    if (s.supported) lines.push(`supported yes: ${s.run_nodes} nodes run after folding ${s.folded_nodes} constant/shape nodes`);
    else if (s.unsupported.length) lines.push(`supported NO: ${s.unsupported.map((u) => `${u.op}${u.reason ? ` (${u.reason})` : ''} at '${u.node}'`).join('; ')}`);
    else lines.push(`supported NO: ${s.error}`);
    if (s.macs !== undefined) lines.push(`macs      ${fmtInt(s.macs)} per example (Conv/ConvTranspose/Gemm/MatMul multiply-accumulates)`);
    lines.push(`params    ${fmtInt(s.parameters.total)} total, ${fmtInt(s.parameters.trainable)} trainable, ${fmtInt(s.parameters.prunable)} prunable`);
    const prunable = s.layers.filter((l) => l.prunable);
    if (prunable.length) {
      lines.push('', 'prunable layers');
      lines.push(table(['weight', 'op', 'shape', 'params', 'zeros', 'sparsity'], [
        ...prunable.map((l) => [l.name, l.op, shape(l.shape), fmtInt(l.params), fmtInt(l.zeros), pct(l.sparsity, 2)]),
        ['all', '', '', fmtInt(s.parameters.prunable), fmtInt(s.parameters.prunable_zeros), pct(s.global_sparsity, 2)],
      ]));
    } else lines.push('prunable  none (no Conv/Gemm/MatMul weights among the initializers)');
    const yes = (v: boolean): string => (v ? 'yes' : '-');
    lines.push('', 'operators (converts: tfjs graph; gradient: the compiled training engine; IBP/CROWN: bound rules; int8: QDQ weights)');
    lines.push(table(['op', 'nodes', 'converts', 'gradient', 'IBP', 'CROWN', 'int8'], ops.map((o) => [o.op, o.nodes, yes(o.converts), o.gradient, yes(o.ibp), yes(o.crown), yes(o.int8_weights)])));
    process.stdout.write(`${lines.join('\n')}\n`);
  },
};
