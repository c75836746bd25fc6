// The option schemas of the commands that recipes run as stages (train, prune, quantize): the CLI builds
// its yargs commands from them, and recipes validate their stages against them, so the two never drift.
import type { Argv } from 'yargs';
import { METHODS, STRUCTURES } from '../prune/prune.js';
import { withModelOptions } from './common.js';
import { withBackend, withNormalization, withObjective, withTraining } from './training.js';

export function trainOptions<T>(y: Argv<T>) {
  return (
    withTraining(withObjective(withBackend(withNormalization(withModelOptions(y))), 'natural'), { epochs: 5, lr: 0.05 })
      .option('out', { type: 'string', describe: 'trained model (default: <model>.<objective>.onnx)' })
      .option('eval-eps', { type: 'number', describe: 'ε of the final PGD evaluation (default: --eps, or 0.1 when --eps is 0)' })
      .option('eval-steps', { type: 'number', default: 20, describe: 'steps of the final PGD evaluation (0: benign only)' })
      .option('eval-restarts', { type: 'number', default: 1 })
      .option('final-eval-limit', { type: 'number', describe: 'test images of the final evaluation (default: all)' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bars' })
  );
}

export function pruneOptions<T>(y: Argv<T>) {
  return (
    withTraining(withObjective(withBackend(withNormalization(withModelOptions(y))), 'trades'), { lr: 0.1 })
      .option('method', { type: 'string', default: 'hydra', choices: METHODS as unknown as string[], describe: 'hydra: importance scores (Sehwag et al. 2020); lwm: robust magnitude pruning; admm: Adv-ADMM (Ye et al. 2019)' })
      .option('sparsity', { type: 'number', default: 0.99, describe: 'fraction removed, in (0,1): of the prunable weights, or with --structure channel of every channel group' })
      .option('allocation', { type: 'string', default: 'layer', choices: ['layer', 'global'], describe: 'top-k per layer (per channel group) or one global threshold (channels: on score / the group\'s largest score)' })
      .option('score-init', { type: 'string', default: 'scaled', choices: ['scaled', 'kaiming'], describe: 'hydra: sqrt(6/fan_in)·w/max|w| (the paper; channels: channel norm / the group\'s largest), or kaiming-uniform' })
      .option('prune-epochs', { type: 'number', default: 3, describe: 'epochs of score training (hydra) or ADMM (admm); lwm has none' })
      .option('finetune-epochs', { type: 'number', default: 3 })
      .option('finetune-lr', { type: 'number', default: 0.01 })
      .option('rho', { type: 'number', default: 0.01, describe: 'admm: initial penalty ρ' })
      .option('rho-growth', { type: 'number', default: 1.5, describe: 'admm: ρ multiplied by this after every epoch' })
      .option('structure', { type: 'string', default: 'unstructured', choices: STRUCTURES as unknown as string[], describe: 'unstructured: single weights; channel: whole channels of every coupled channel group, removed from the exported file (every method); filter: admm only, whole output rows of each layer zeroed in place' })
      .option('keep-shape', { type: 'boolean', default: false, describe: 'channel: also write the masked network (removed channels zero, every shape as in the input) next to --out, as <out name>.masked.onnx' })
      .option('out', { type: 'string', describe: 'pruned model (default: <model>.<method>-<sparsity>.onnx, channel: <model>.<method>-channel-<sparsity>.onnx)' })
      .option('quantize', { type: 'string', default: 'none', choices: ['none', 'int8'], describe: 'also write <out>.int8.onnx: QDQ, per-channel int8 weights, uint8 activations' })
      .option('calibration', { type: 'string', default: 'minmax', choices: ['minmax', 'percentile'], describe: 'int8 activation ranges' })
      .option('calibration-size', { type: 'number', default: 512, describe: 'training images used for calibration' })
      .option('percentile', { type: 'number', default: 99.99, describe: 'percentile calibration: covered percentile of activation values' })
      .option('sparse-format', { type: 'string', default: 'dense', choices: ['dense', 'sparse-initializer'], describe: 'store pruned weights dense (exact zeros) or as ONNX sparse initializers' })
      .option('eval-eps', { type: 'number', describe: 'ε of the final PGD evaluation (default: --eps)' })
      .option('eval-steps', { type: 'number', default: 20 })
      .option('final-eval-limit', { type: 'number', describe: 'test images of the final evaluation (default: all)' })
      .option('quiet', { type: 'boolean', default: false })
  );
}

export function quantizeOptions<T>(y: Argv<T>) {
  return (
    withNormalization(y)
      .positional('model', { type: 'string', demandOption: true, describe: 'ONNX classifier (opset ≥ 13)' })
      .option('data', { type: 'string', default: 'fashion-mnist', describe: 'calibration images come from the training split; accuracy from the test split' })
      .option('calibration', { type: 'string', default: 'minmax', choices: ['minmax', 'percentile'] })
      .option('calibration-size', { type: 'number', default: 512 })
      .option('percentile', { type: 'number', default: 99.99 })
      .option('eval-limit', { type: 'number', describe: 'test images for the accuracy comparison (default: all)' })
      .option('sparse-format', { type: 'string', default: 'dense', choices: ['dense', 'sparse-initializer'], describe: 'store int8 weights that contain zeros (pruned models) as ONNX sparse initializers' })
      .option('out', { type: 'string', describe: 'default: <model>.int8.onnx' })
      .option('json', { type: 'boolean', default: false })
  );
}

