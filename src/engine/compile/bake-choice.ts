// Baked or fed weights for one attack configuration (a batch size and attack kind), from measured times.
// Baked: the weights are constants of a session made for them (onnxruntime folds and pre-packs them), a new
// session per weight set. Fed: one shared session takes the weights as inputs, after a prep call per weight
// set (hoist.ts). The first weight sets try both (2 each); the cheaper per weight set is kept.

const median = (v: number[]): number => [...v].sort((p, q) => p - q)[v.length >> 1]!;

export class BakeChoice {
  private readonly make: number[] = [];
  private readonly bakedCall: number[] = [];
  private readonly fedCall: number[] = [];
  /** a fed session's weight-only part, once per weight set */
  private readonly prep: number[] = [];
  private readonly callsPerWeights: number[] = [];
  /** weight sets tried with fed weights so far (baked: one `make` each) */
  private fedSets = 0;
  /** at the choice: the fed way's median prep and call times, against which a baked choice keeps being checked */
  private fedCost?: { prep: number; call: number };
  /** after a baked choice: per weight set, its whole baked cost (making and every call) and the fed estimate for as many calls */
  private readonly bakedSets: { spent: number; fedEstimate: number }[] = [];
  /** true: bake; false: feed; undefined: still trying both */
  choice?: boolean;

  /** Whether the next weight set is baked; a fed one is counted. */
  nextBakes(): boolean {
    const bake = this.choice ?? (this.make.length < 2 || this.fedSets >= 2);
    if (!bake) this.fedSets++;
    return bake;
  }

  made(ms: number): void {
    this.make.push(ms);
  }

  prepped(ms: number): void {
    if (this.choice === undefined) this.prep.push(ms);
  }

  called(baked: boolean, ms: number): void {
    if (this.choice === undefined) (baked ? this.bakedCall : this.fedCall).push(ms);
  }

  /**
   * A weight set is done, after `calls` calls; `spent` is a baked set's whole cost (its making and calls). The
   * choice is made once both ways were tried. A baked choice stays on trial: its first weight sets were timed
   * while the process warmed up, and a session's making can cost more later (larger heaps, its arena's first
   * call) than it did then. When its last 3 weight sets cost more, in all, than the fed way's estimate for the
   * same calls, the weights are fed from then on (measured: a ResNet-18 TRADES bench that baked its PGD
   * sessions after a close first comparison ran at 54 img/s; fed, 81).
   */
  released(baked: boolean, calls: number, spent: number): void {
    if (this.choice === true && baked && this.fedCost) {
      this.bakedSets.push({ spent, fedEstimate: this.fedCost.prep + calls * this.fedCost.call });
      if (this.bakedSets.length > 3) this.bakedSets.shift();
      const sum = (k: 'spent' | 'fedEstimate'): number => this.bakedSets.reduce((p, v) => p + v[k], 0);
      if (this.bakedSets.length === 3 && sum('spent') > sum('fedEstimate')) this.choice = false;
      return;
    }
    if (this.choice !== undefined) return;
    this.callsPerWeights.push(calls);
    if (this.make.length >= 2 && this.fedSets >= 2 && this.fedCall.length && this.bakedCall.length) {
      // per call: the median (a session's first call also warms it up); calls per weight set: the median, not
      // the mean: one evaluation's thousands of calls on a set must not make every later set bake (TRADES'
      // p_clean forward shares the configuration: one call per set)
      const perWeights = median(this.callsPerWeights);
      this.fedCost = { prep: this.prep.length ? median(this.prep) : 0, call: median(this.fedCall) };
      this.choice = median(this.make) + perWeights * median(this.bakedCall) <= this.fedCost.prep + perWeights * this.fedCost.call;
    }
  }
}

/**
 * Baked or fed weights for one training configuration (a batch size and pass kind), from its passes' times,
 * session making included: the first passes alternate, 3 each way, and the way with the faster pass is kept
 * (the first of each way also compiled its template and is not compared; the fastest, not the mean, because
 * these passes run while the process warms up, which only ever adds time: a ViT natural-step bench chose
 * baked weights on means and ran at 44 img/s, 77 fed). A baked choice stays on trial as the attack sessions'
 * does: when the median of its last 3 passes is slower than the fastest fed pass, passes are fed from then on.
 */
export class PassBakeChoice {
  private readonly baked: number[] = [];
  private readonly fed: number[] = [];
  /** after a baked choice: the last 3 baked passes */
  private readonly recent: number[] = [];
  choice?: boolean;

  nextBakes(): boolean {
    return this.choice ?? this.baked.length <= this.fed.length;
  }

  passed(baked: boolean, ms: number): void {
    const fastestFed = (): number => Math.min(...this.fed.slice(1));
    if (this.choice === undefined) {
      (baked ? this.baked : this.fed).push(ms);
      if (this.baked.length >= 3 && this.fed.length >= 3) this.choice = Math.min(...this.baked.slice(1)) <= fastestFed();
      return;
    }
    if (!this.choice || !baked) return;
    this.recent.push(ms);
    if (this.recent.length > 3) this.recent.shift();
    if (this.recent.length === 3 && median(this.recent) > fastestFed()) this.choice = false;
  }
}
