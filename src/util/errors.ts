/** An error about the user's input (model, data, flags): printed as one line, exit code 1, no stack trace. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** A problem with an ONNX file or graph; the message names the file, node or tensor. */
export class OnnxError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'OnnxError';
  }
}

/** The model uses operators this converter does not implement; lists all of them at once. */
export class UnsupportedOpsError extends OnnxError {
  constructor(readonly unsupported: { opType: string; domain: string; node: string; reason?: string }[]) {
    const byType = new Map<string, string[]>();
    for (const u of unsupported) {
      const key = (u.domain && u.domain !== 'ai.onnx' ? `${u.domain}::` : '') + u.opType + (u.reason ? ` (${u.reason})` : '');
      byType.set(key, [...(byType.get(key) ?? []), u.node]);
    }
    const parts = [...byType].map(([k, nodes]) => `${k} at ${nodes.map((n) => `'${n}'`).join(', ')}`);
    super(`unsupported operators: ${parts.join('; ')}`);
    this.name = 'UnsupportedOpsError';
  }
}
