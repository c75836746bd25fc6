import type { CommandModule } from 'yargs';
import { loadModel } from '../onnx/model.js';
import { checkModel } from '../verify/equivalence.js';
import { parseInputShapes, printJson, withModelOptions } from './common.js';
import { UserError } from '../util/errors.js';

interface Args { model: string; json: boolean; samples: number; seed: number; 'input-shape'?: string[] }

export const checkCommand: CommandModule<object, Args> = {
  command: 'check <model>',
  describe: 'convert to tfjs, compare with onnxruntime-node on random inputs in [0,1], export back to ONNX and compare again',
  builder: (y) =>
    withModelOptions(y)
      .option('samples', { type: 'number', default: 4, describe: 'random input batches (batch 8 when the batch is free)' })
      .option('seed', { type: 'number', default: 0, describe: 'seed of the random inputs' }) as never,
  handler: async (args) => {
    if (!Number.isInteger(args.samples) || args.samples < 1) throw new UserError(`--samples must be a positive integer, got ${args.samples}`);
    const model = loadModel(args.model);
    const r = await checkModel(model, { samples: args.samples, seed: args.seed, inputShapes: parseInputShapes(args['input-shape'], undefined) });
    if (args.json) printJson({ model: args.model, ...r });
    else {
      const e = (x: number) => x.toExponential(2);
      process.stdout.write(
        `${args.model}: ${r.samples} batches of [${r.input_shape}] on tfjs (${r.backend}) vs onnxruntime-node\n` +
        `  max |logit difference|  ${e(r.max_abs_diff)}   (tolerance ${e(r.tolerance)} = 1e-4 × (1 + max |logit| ${r.max_abs_logit.toFixed(3)}))\n` +
        `  argmax agreement        ${(100 * r.argmax_agreement).toFixed(2)}%\n` +
        `  exported model          ${e(r.export_max_abs_diff)} max difference (onnxruntime-node on the re-exported file)\n` +
        `  ${r.ok ? 'OK' : 'MISMATCH'}  (${r.seconds.toFixed(2)} s)\n`,
      );
    }
    if (!r.ok) process.exitCode = 1;
  },
};
