// VNN-LIB properties (the SMT-LIB2 subset of VNN-COMP): `(declare-const X_i Real)`, `(declare-const Y_j Real)`
// and `(assert …)` over linear comparisons, `and`, `or`. The asserts together describe the UNSAFE region: an
// input in the box whose outputs satisfy the output constraints is a counterexample. The conjunction of the
// asserts is put in disjunctive normal form; each conjunct holds input bounds (a box) and linear output
// constraints. Variables are bound to flat indices of the model's input and output (row-major) by
// `bindProperty` once the model's shapes are known.
import { UserError } from '../../util/errors.js';

interface Token { text: string; line: number; col: number }
type SExpr = (Token & { kind: 'atom' }) | { kind: 'list'; items: SExpr[]; line: number; col: number; text: '(' };

export interface VnnVar {
  kind: 'X' | 'Y';
  name: string;
  /** the indices in the name: X_3 → [3]; X_0_0_1 → [0, 0, 1] (a multi-index into the tensor) */
  index: number[];
}

/** Σ terms[var id]·var + constant */
interface Linear { terms: Map<number, number>; constant: number }

/** One comparison, normalised: an input bound, a constraint on the outputs, or a constant truth value. */
export type VnnAtom =
  | { kind: 'input'; v: number; side: 'lower' | 'upper'; value: number; line: number }
  | { kind: 'output'; terms: Map<number, number>; constant: number; strict: boolean; line: number }
  | { kind: 'constant'; holds: boolean; line: number };

export interface ParsedVnnlib {
  file: string;
  vars: VnnVar[];
  /** the conjunction of all asserts in disjunctive normal form (OR of ANDs); [] when unsatisfiable as written */
  dnf: VnnAtom[][];
}

/** Σ coef[j]·Y_j ≤ rhs (strict: <), Y the flattened model output */
export interface OutputConstraint { coef: Float64Array; rhs: number; strict: boolean; line: number }

/** One disjunct of the unsafe region: an input box and a conjunction of output constraints. */
export interface VnnRegion { lower: Float64Array; upper: Float64Array; constraints: OutputConstraint[] }

export interface VnnProperty { file: string; inputs: number; outputs: number; regions: VnnRegion[] }

/** the disjunctive normal form may hold at most this many conjunctions */
const MAX_DISJUNCTS = 100_000;

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const VAR_NAME = /^([XY])((?:_\d+)+)$/;

function tokenize(text: string, file: string): Token[] {
  const out: Token[] = [];
  let line = 1;
  let col = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const ch = text[i]!;
    if (ch === '\n') {
      line++;
      col = 1;
      i++;
    } else if (ch === ' ' || ch === '\t' || ch === '\r' || ch === '\f') {
      i++;
      col++;
    } else if (ch === ';') {
      while (i < n && text[i] !== '\n') i++;
    } else if (ch === '(' || ch === ')') {
      out.push({ text: ch, line, col });
      i++;
      col++;
    } else if (ch === '|') {
      const end = text.indexOf('|', i + 1);
      if (end < 0) throw syntaxError(file, { line, col }, "quoted symbol '|' is never closed");
      const sym = text.slice(i + 1, end);
      if (sym.includes('\n')) throw syntaxError(file, { line, col }, 'quoted symbols spanning lines are not supported');
      out.push({ text: sym, line, col });
      col += end + 1 - i;
      i = end + 1;
    } else {
      const start = i;
      while (i < n && !/[\s();|]/.test(text[i]!)) i++;
      out.push({ text: text.slice(start, i), line, col });
      col += i - start;
    }
  }
  return out;
}

function syntaxError(file: string, at: { line: number; col: number }, message: string): UserError {
  return new UserError(`${file}:${at.line}:${at.col}: ${message}`);
}

const shown = (e: SExpr): string => (e.kind === 'atom' ? `'${e.text}'` : "'('");

function readSExprs(tokens: Token[], file: string): SExpr[] {
  const top: SExpr[] = [];
  const stack: Extract<SExpr, { kind: 'list' }>[] = [];
  for (const t of tokens) {
    if (t.text === '(') {
      const l: Extract<SExpr, { kind: 'list' }> = { kind: 'list', items: [], line: t.line, col: t.col, text: '(' };
      (stack.length ? stack[stack.length - 1]!.items : top).push(l);
      stack.push(l);
    } else if (t.text === ')') {
      if (!stack.length) throw syntaxError(file, t, "unexpected ')' (no '(' is open)");
      stack.pop();
    } else {
      const a: SExpr = { kind: 'atom', ...t };
      if (!stack.length) throw syntaxError(file, t, `unexpected '${t.text}' outside parentheses`);
      stack[stack.length - 1]!.items.push(a);
    }
  }
  if (stack.length) throw syntaxError(file, stack[stack.length - 1]!, "'(' is never closed");
  return top;
}

/** Parse VNN-LIB text. `file` names the source in error messages (`file:line:col: …`). */
export function parseVnnlib(text: string, file = 'property.vnnlib'): ParsedVnnlib {
  const sexprs = readSExprs(tokenize(text, file), file);
  const vars: VnnVar[] = [];
  const byName = new Map<string, number>();
  let dnf: VnnAtom[][] = [[]];
  const err = (at: SExpr, message: string): UserError => syntaxError(file, at, message);

  const linear = (e: SExpr): Linear => {
    if (e.kind === 'atom') {
      if (NUMBER.test(e.text)) return { terms: new Map(), constant: Number(e.text) };
      const id = byName.get(e.text);
      if (id === undefined) throw err(e, VAR_NAME.test(e.text) ? `undeclared variable '${e.text}'` : `expected a number or a declared variable, got '${e.text}'`);
      return { terms: new Map([[id, 1]]), constant: 0 };
    }
    const [head, ...args] = e.items;
    if (!head || head.kind !== 'atom') throw err(head ?? e, `expected an arithmetic operator, got ${head ? shown(head) : "')'"}`);
    const op = head.text;
    if (!['+', '-', '*', '/'].includes(op)) throw err(head, `expected +, -, * or / in a term, got '${op}'`);
    if (!args.length) throw err(head, `'${op}' needs at least one argument`);
    const parts = args.map(linear);
    const scale = (a: Linear, k: number): Linear => ({ terms: new Map([...a.terms].map(([v, c]) => [v, c * k])), constant: a.constant * k });
    const add = (a: Linear, b: Linear): Linear => {
      const terms = new Map(a.terms);
      for (const [v, c] of b.terms) terms.set(v, (terms.get(v) ?? 0) + c);
      return { terms, constant: a.constant + b.constant };
    };
    if (op === '+') return parts.reduce(add);
    if (op === '-') return parts.length === 1 ? scale(parts[0]!, -1) : parts.slice(1).reduce((a, b) => add(a, scale(b, -1)), parts[0]!);
    if (op === '*') {
      return parts.reduce((a, b, k) => {
        if (a.terms.size && b.terms.size) throw err(args[k]!, `nonlinear term: '*' of two expressions with variables`);
        return a.terms.size ? scale(a, b.constant) : scale(b, a.constant);
      });
    }
    if (parts.length !== 2) throw err(head, "'/' takes two arguments");
    if (parts[1]!.terms.size) throw err(args[1]!, 'nonlinear term: division by an expression with variables');
    if (parts[1]!.constant === 0) throw err(args[1]!, 'division by zero');
    return scale(parts[0]!, 1 / parts[1]!.constant);
  };

  /** a − b ≤ 0 (strict: < 0), classified */
  const compare = (a: Linear, b: Linear, strict: boolean, at: SExpr): VnnAtom => {
    const terms = new Map(a.terms);
    for (const [v, c] of b.terms) terms.set(v, (terms.get(v) ?? 0) - c);
    for (const [v, c] of terms) if (c === 0) terms.delete(v);
    const constant = a.constant - b.constant;
    const line = at.line;
    if (!terms.size) return { kind: 'constant', holds: strict ? constant < 0 : constant <= 0, line };
    const kinds = new Set([...terms.keys()].map((v) => vars[v]!.kind));
    if (kinds.size > 1) throw err(at, 'a constraint mixing inputs (X) and outputs (Y) is not supported');
    if (kinds.has('X')) {
      if (terms.size > 1) throw err(at, 'a constraint on several inputs is not an input box bound (only bounds like (<= X_0 0.5) are supported)');
      const [[v, c]] = [...terms] as [[number, number]];
      // c·X + constant ≤ 0: X ≤ −constant/c (c > 0) or X ≥ −constant/c (c < 0); strictness does not change the box's closure
      return { kind: 'input', v, side: c > 0 ? 'upper' : 'lower', value: -constant / c, line };
    }
    return { kind: 'output', terms, constant, strict, line };
  };

  const product = (a: VnnAtom[][], b: VnnAtom[][], at: SExpr): VnnAtom[][] => {
    if (a.length * b.length > MAX_DISJUNCTS) throw err(at, `the property expands to more than ${MAX_DISJUNCTS} disjuncts`);
    const out: VnnAtom[][] = [];
    for (const x of a) for (const y of b) out.push([...x, ...y]);
    return out;
  };

  /** a formula as OR of ANDs of atoms */
  const formula = (e: SExpr): VnnAtom[][] => {
    if (e.kind === 'atom') {
      if (e.text === 'true') return [[]];
      if (e.text === 'false') return [];
      throw err(e, `expected a formula, got '${e.text}'`);
    }
    const [head, ...args] = e.items;
    if (!head || head.kind !== 'atom') throw err(head ?? e, `expected and, or or a comparison, got ${head ? shown(head) : "')'"}`);
    switch (head.text) {
      case 'and':
        return args.reduce((acc, a) => product(acc, formula(a), a), [[]] as VnnAtom[][]);
      case 'or': {
        const out: VnnAtom[][] = [];
        for (const a of args) {
          out.push(...formula(a));
          if (out.length > MAX_DISJUNCTS) throw err(a, `the property expands to more than ${MAX_DISJUNCTS} disjuncts`);
        }
        return out;
      }
      case '<=': case '<': case '>=': case '>': case '=': {
        if (args.length < 2) throw err(head, `'${head.text}' needs two arguments`);
        const terms = args.map(linear);
        const conj: VnnAtom[] = [];
        for (let k = 0; k + 1 < terms.length; k++) {
          const [a, b] = [terms[k]!, terms[k + 1]!];
          const at = args[k]!;
          if (head.text === '<=' || head.text === '<') conj.push(compare(a, b, head.text === '<', at));
          else if (head.text === '>=' || head.text === '>') conj.push(compare(b, a, head.text === '>', at));
          else conj.push(compare(a, b, false, at), compare(b, a, false, at));
        }
        return [conj];
      }
      case 'not': case 'distinct': case '=>': case 'xor': case 'ite':
        throw err(head, `'${head.text}' is not supported (VNN-LIB properties use and, or and comparisons)`);
      default:
        throw err(head, `unknown operator '${head.text}'`);
    }
  };

  for (const cmd of sexprs) {
    if (cmd.kind !== 'list') throw err(cmd, `expected a command, got ${shown(cmd)}`);
    const [head, ...args] = cmd.items;
    if (!head || head.kind !== 'atom') throw err(head ?? cmd, `expected a command name, got ${head ? shown(head) : "')'"}`);
    switch (head.text) {
      case 'declare-const': {
        const [name, sort, extra] = args;
        if (!name || name.kind !== 'atom') throw err(name ?? head, `declare-const needs a variable name, got ${name ? shown(name) : "')'"}`);
        if (!sort || sort.kind !== 'atom') throw err(sort ?? name, `declare-const ${name.text} needs the sort Real, got ${sort ? shown(sort) : "')'"}`);
        if (extra) throw err(extra, `unexpected ${shown(extra)} after declare-const ${name.text} ${sort.text}`);
        if (sort.text !== 'Real') throw err(sort, `sort '${sort.text}' is not supported (declare-const ${name.text} Real)`);
        const m = VAR_NAME.exec(name.text);
        if (!m) throw err(name, `variables must be named X_<i> (inputs) or Y_<j> (outputs), got '${name.text}'`);
        if (byName.has(name.text)) throw err(name, `'${name.text}' is declared twice`);
        byName.set(name.text, vars.length);
        vars.push({ kind: m[1] as 'X' | 'Y', name: name.text, index: m[2]!.slice(1).split('_').map(Number) });
        break;
      }
      case 'assert': {
        if (args.length !== 1) throw err(args[1] ?? head, `assert takes one formula, got ${args.length}`);
        dnf = product(dnf, formula(args[0]!), args[0]!);
        break;
      }
      case 'set-logic': case 'set-info': case 'set-option': case 'check-sat': case 'get-model': case 'exit':
        break;
      default:
        throw err(head, `unknown command '${head.text}' (expected declare-const or assert)`);
    }
  }
  // conjunctions holding a false constant are empty
  dnf = dnf.filter((c) => c.every((a) => a.kind !== 'constant' || a.holds)).map((c) => c.filter((a) => a.kind !== 'constant'));
  return { file, vars, dnf };
}

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** Row-major flat index of a variable's multi-index in `shape` (with or without its leading batch dimension). */
function flatIndex(v: VnnVar, shape: readonly number[], file: string): number {
  const total = numel(shape);
  let idx = v.index;
  let dims = shape;
  if (idx.length === 1) {
    if (idx[0]! >= total) throw new UserError(`${file}: ${v.name} is out of range: the model's ${v.kind === 'X' ? 'input' : 'output'} has ${total} elements`);
    return idx[0]!;
  }
  if (idx.length !== dims.length && idx.length === dims.length - 1 && dims[0] === 1) dims = dims.slice(1);
  else if (idx.length === dims.length + 1 && idx[0] === 0) idx = idx.slice(1);
  if (idx.length !== dims.length || idx.some((k, d) => k >= dims[d]!)) {
    throw new UserError(`${file}: ${v.name} does not index the model's ${v.kind === 'X' ? 'input' : 'output'} of shape [${shape}]`);
  }
  return idx.reduce((f, k, d) => f * dims[d]! + k, 0);
}

/**
 * The property over a model whose (one) input has `inputShape` and output `outputShape` (batch 1 included or
 * not): every disjunct's input box (each input bounded on both sides) and output constraints. Disjuncts whose
 * box is empty are dropped (they contain no input).
 */
export function bindProperty(p: ParsedVnnlib, inputShape: readonly number[], outputShape: readonly number[]): VnnProperty {
  const inputs = numel(inputShape);
  const outputs = numel(outputShape);
  const flat = p.vars.map((v) => flatIndex(v, v.kind === 'X' ? inputShape : outputShape, p.file));
  const regions: VnnRegion[] = [];
  p.dnf.forEach((conj, d) => {
    const lower = new Float64Array(inputs).fill(-Infinity);
    const upper = new Float64Array(inputs).fill(Infinity);
    const constraints: OutputConstraint[] = [];
    for (const a of conj) {
      if (a.kind === 'input') {
        const i = flat[a.v]!;
        if (a.side === 'lower') lower[i] = Math.max(lower[i]!, a.value);
        else upper[i] = Math.min(upper[i]!, a.value);
      } else if (a.kind === 'output') {
        const coef = new Float64Array(outputs);
        for (const [v, c] of a.terms) coef[flat[v]!]! += c;
        constraints.push({ coef, rhs: 0 - a.constant, strict: a.strict, line: a.line });
      }
    }
    for (let i = 0; i < inputs; i++) {
      if (lower[i] === -Infinity || upper[i] === Infinity) {
        const name = p.vars.find((v, k) => v.kind === 'X' && flat[k] === i)?.name ?? `X_${i}`;
        throw new UserError(`${p.file}: input ${name} has no ${lower[i] === -Infinity ? 'lower' : 'upper'} bound${p.dnf.length > 1 ? ` in disjunct ${d + 1}` : ''} (input boxes must be bounded)`);
      }
    }
    if (!lower.some((l, i) => l > upper[i]!)) regions.push({ lower, upper, constraints });
  });
  return { file: p.file, inputs, outputs, regions };
}
