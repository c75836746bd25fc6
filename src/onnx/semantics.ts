// ONNX attribute semantics that several stages need (the converter, the gradient rules, the tfjs kernels,
// the opset-18 lowering), written once: window geometry of Conv/pooling (pads, auto_pad, ceil_mode,
// dilations), ConvTranspose's pads and output padding, average-pooling divisors, and the axes of
// Softmax-like ops and reductions across opsets.

export interface WindowAttrs {
  strides?: number[];
  dilations?: number[];
  pads?: number[];
  autoPad?: string;
}

export interface Windows {
  /** begins then ends, one per spatial axis */
  pads: number[];
  strides: number[];
  dilations: number[];
  kernel: number[];
  out: number[];
}

/** Output size and explicit pads of conv/pool windows, with ONNX's auto_pad, ceil_mode and dilation rules. */
export function windows(a: WindowAttrs, inSpatial: number[], kernel: number[], ceil: boolean, fail: (why: string) => never): Windows {
  const r = inSpatial.length;
  const strides = a.strides ?? new Array<number>(r).fill(1);
  const dilations = a.dilations ?? new Array<number>(r).fill(1);
  const autoPad = a.autoPad ?? 'NOTSET';
  const pads = (a.pads ?? new Array<number>(2 * r).fill(0)).slice();
  if (strides.length !== r || dilations.length !== r || pads.length !== 2 * r) fail(`strides/dilations/pads do not match ${r} spatial axes`);
  if (strides.some((s) => s < 1) || dilations.some((d) => d < 1)) fail('strides and dilations must be ≥ 1');
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const kd = (kernel[i]! - 1) * dilations[i]! + 1;
    const s = strides[i]!;
    const n = inSpatial[i]!;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      const o = Math.ceil(n / s);
      const total = Math.max(0, (o - 1) * s + kd - n);
      const small = Math.floor(total / 2);
      pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
      pads[i + r] = total - pads[i]!;
      out.push(o);
    } else {
      if (autoPad === 'VALID') {
        pads[i] = 0;
        pads[i + r] = 0;
      } else if (autoPad !== 'NOTSET') fail(`auto_pad '${autoPad}' is not valid`);
      const span = n + pads[i]! + pads[i + r]! - kd;
      if (span < 0) fail(`kernel ${kernel[i]} (dilation ${dilations[i]}) is larger than the padded input ${n + pads[i]! + pads[i + r]!}`);
      let o = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
      // a window may not start in the end padding (PyTorch/onnxruntime rule for ceil_mode)
      if (ceil && (o - 1) * s >= n + pads[i]!) o--;
      out.push(o);
    }
  }
  return { pads, strides, dilations, kernel, out };
}

/**
 * Kernel taps of a convolution that read only padding, for every output position (a 3x3 kernel with pad 1 on
 * a 1x1 map: all but the centre). Returns, per spatial axis, the live taps [first, last] and the pads of the
 * same convolution with the kernel cropped to them; undefined when every tap is live or the cropped form
 * would not give the same output size.
 */
export function cropDeadTaps(w: Windows, inSpatial: number[]): { first: number[]; last: number[]; pads: number[] } | undefined {
  const r = inSpatial.length;
  const first: number[] = [];
  const last: number[] = [];
  for (let i = 0; i < r; i++) {
    const [s, d, pb, n, o] = [w.strides[i]!, w.dilations[i]!, w.pads[i]!, inSpatial[i]!, w.out[i]!];
    // tap k reads rows k·d − pb, k·d − pb + s, …, k·d − pb + (o − 1)·s
    const live = (k: number): boolean => k * d - pb + (o - 1) * s >= 0 && k * d - pb < n;
    let k0 = 0;
    while (k0 < w.kernel[i]! && !live(k0)) k0++;
    let k1 = w.kernel[i]! - 1;
    while (k1 > k0 && !live(k1)) k1--;
    if (k0 === w.kernel[i]!) return undefined;
    first.push(k0);
    last.push(k1);
  }
  if (first.every((k) => k === 0) && last.every((k, i) => k === w.kernel[i]! - 1)) return undefined;
  const pads = new Array<number>(2 * r).fill(0);
  for (let i = 0; i < r; i++) {
    const [s, d, n, o] = [w.strides[i]!, w.dilations[i]!, inSpatial[i]!, w.out[i]!];
    pads[i] = w.pads[i]! - first[i]! * d;
    const kd = (last[i]! - first[i]!) * d + 1;
    pads[i + r] = Math.max(0, (o - 1) * s + kd - n - pads[i]!);
    if (pads[i]! < 0 || Math.floor((n + pads[i]! + pads[i + r]! - kd) / s) + 1 !== o) return undefined;
  }
  return { first, last, pads };
}

export interface ConvTransposeAttrs extends WindowAttrs {
  outputPadding?: number[];
  outputShape?: number[];
}

/**
 * Geometry of a transposed convolution: the full output s·(in−1) + output_padding + (k−1)·d + 1 cropped by
 * `pads` (begin…, end…; an end pad is negative when output_shape asks for more rows than the full output,
 * which then come at the end). With output_shape or SAME auto_pad the pads are derived: onnxruntime puts the
 * odd pad at the end unless SAME_LOWER (the spec text says the opposite for NOTSET).
 */
export function convTransposeWindows(a: ConvTransposeAttrs, inSpatial: number[], kernel: number[]): Windows & { outputPadding: number[] } {
  const r = inSpatial.length;
  const strides = a.strides ?? new Array<number>(r).fill(1);
  const dilations = a.dilations ?? new Array<number>(r).fill(1);
  const outputPadding = a.outputPadding ?? new Array<number>(r).fill(0);
  const autoPad = a.autoPad ?? 'NOTSET';
  let pads = (a.pads ?? new Array<number>(2 * r).fill(0)).slice();
  const full = (i: number): number => strides[i]! * (inSpatial[i]! - 1) + outputPadding[i]! + (kernel[i]! - 1) * dilations[i]! + 1;
  if (a.outputShape || autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    const target = a.outputShape ? a.outputShape.slice(-r) : inSpatial.map((n, i) => n * strides[i]!);
    for (let i = 0; i < r; i++) {
      const total = full(i) - target[i]!;
      if (total < 0) {
        pads[i] = 0;
        pads[i + r] = total;
        continue;
      }
      const half = Math.floor(total / 2);
      pads[i] = autoPad === 'SAME_LOWER' ? total - half : half;
      pads[i + r] = total - pads[i]!;
    }
  } else if (autoPad === 'VALID') pads = new Array<number>(2 * r).fill(0);
  const out = inSpatial.map((_, i) => full(i) - pads[i]! - pads[i + r]!);
  return { pads, strides, dilations, kernel, out, outputPadding };
}

/**
 * 1/divisor of average pooling per output position (row-major over the output grid), as onnxruntime
 * divides: with count_include_pad the window counts explicit pads but not the ceil-mode overhang past
 * them; without it, only real input elements.
 */
export function poolDivisors(inSpatial: number[], w: Windows, countIncludePad: boolean): Float32Array {
  const r = inSpatial.length;
  const perAxis = inSpatial.map((size, i) => {
    const [s, k, d] = [w.strides[i]!, w.kernel[i]!, w.dilations[i]!];
    return Array.from({ length: w.out[i]! }, (_, o) => {
      const start = o * s - w.pads[i]!;
      const end = Math.min(start + (k - 1) * d + 1, size + w.pads[i + r]!);
      if (countIncludePad) return Math.ceil((end - start) / d);
      let c = 0;
      for (let t = start; t < end; t += d) if (t >= 0 && t < size) c++;
      return c;
    });
  });
  const n = w.out.reduce((p, v) => p * v, 1);
  const inv = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    let rem = k;
    let div = 1;
    for (let i = r - 1; i >= 0; i--) {
      div *= perAxis[i]![rem % w.out[i]!]!;
      rem = Math.floor(rem / w.out[i]!);
    }
    inv[k] = 1 / Math.max(1, div);
  }
  return inv;
}

/** Softmax, LogSoftmax, Hardmax: before opset 13 the input is coerced to 2-D at `axis` (default 1); since, one axis (default −1). */
export function softmaxAxis(opset: number, axisAttr: number | undefined, rank: number): { axis: number; coerce2d: boolean } {
  const coerce2d = opset < 13;
  const axis = axisAttr ?? (coerce2d ? 1 : -1);
  return { axis: axis < 0 ? axis + rank : axis, coerce2d };
}

/** Whether a reduction reads its axes from input 1 (ReduceSum since opset 13, the others since 18) rather than the `axes` attribute. */
export function reduceAxesFromInput(opType: string, opset: number): boolean {
  return opset >= (opType === 'ReduceSum' ? 13 : 18);
}
