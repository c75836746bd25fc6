// All operator converters register themselves on import.
import './elementwise.js';
import './shape.js';
import './nn.js';

export { getOp, supportedOpTypes, unsupportedReason, type OpDef } from './registry.js';
