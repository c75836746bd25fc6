// The operator registry: every family registers its specs on import (a duplicate throws).
import './elementwise.js';
import './shape.js';
import './nn.js';
import './reduce.js';
export { batchNormTraining } from './nn.js';

export {
  COMPILED_OPSET, capabilities, defineOp, gradRuleOf, opSpec, opTypes, unsupportedReason,
  type BoundRules, type Capabilities, type CrownRule, type ForwardRule, type GradCtx, type GradRegion, type GradRule, type IbpCtx, type IbpRule,
  type Interval, type NoGradient, type OpSpec, type ParamRole, type ParamSlots, type QuantRule,
} from './spec.js';
