// Progress bars on stderr (cli-progress); on a non-terminal, a plain line every few seconds.
import cliProgress from 'cli-progress';

export interface Progress {
  update(done: number, fields?: Record<string, string | number>): void;
  stop(): void;
}

export function progressBar(title: string, total: number, opts: { quiet?: boolean } = {}): Progress {
  if (opts.quiet || process.env.HYDRA_NO_PROGRESS) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${title} |{bar}| {percentage}% {value}/{total} {info} | {rate} img/s | ETA {eta_formatted}`,
      stream: process.stderr,
      hideCursor: false,
      noTTYOutput: true,
      notTTYSchedule: 5000,
      etaBuffer: 50,
      barsize: 24,
    },
    cliProgress.Presets.shades_classic,
  );
  const t0 = performance.now();
  bar.start(total, 0, { info: '', rate: '-' });
  return {
    update(done, fields = {}) {
      const secs = (performance.now() - t0) / 1000;
      const info = Object.entries(fields).map(([k, v]) => `${k} ${typeof v === 'number' ? v.toFixed(4).replace(/\.?0+$/, '') : v}`).join(' ');
      bar.update(done, { info, rate: secs > 0 ? (done / secs).toFixed(0) : '-' });
    },
    stop() {
      bar.stop();
    },
  };
}
