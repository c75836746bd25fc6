// VNN-COMP's result file: the result on the first line; for sat, the counterexample as
// `((X_0 v)\n (X_1 v)\n … (Y_0 v) …)`, X the flattened input and Y onnxruntime's flattened outputs there.
import type { VnnlibReport } from './check.js';

const num = (v: number): string => (Object.is(v, -0) ? '0' : String(v));

/** The text of the result file of one instance. */
export function resultFileText(r: Pick<VnnlibReport, 'result' | 'counterexample'>): string {
  if (r.result !== 'sat' || !r.counterexample) return `${r.result}\n`;
  const parts = [...r.counterexample.x.map((v, i) => `(X_${i} ${num(v)})`), ...r.counterexample.y.map((v, j) => `(Y_${j} ${num(v)})`)];
  return `sat\n(${parts.join('\n ')})\n`;
}
