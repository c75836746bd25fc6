/** The model uses an op the compiled engine cannot differentiate (the per-op tfjs graph is used instead). */
export class NotCompilableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotCompilableError';
  }
}
