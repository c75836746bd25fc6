// Progress bars on stderr (cli-progress); on a non-terminal (logs, CI), a plain line every 30 s. cli-progress'
// own non-TTY mode prints from a timer, which never fires while training blocks the event loop.
import cliProgress from 'cli-progress';

export interface Progress {
  update(done: number, fields?: Record<string, string | number>): void;
  stop(): void;
}

export function progressBar(title: string, total: number, opts: { quiet?: boolean } = {}): Progress {
  if (opts.quiet || process.env.HYDRA_NO_PROGRESS) return { update() {}, stop() {} };
  if (!process.stderr.isTTY) return plainLines(title, total, Number(process.env.HYDRA_PROGRESS_SECONDS ?? 30));
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

function fmtSecs(s: number): string {
  if (!Number.isFinite(s)) return '-';
  const m = Math.floor(s / 60);
  return m ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`;
}

function plainLines(title: string, total: number, every: number): Progress {
  const t0 = performance.now();
  let last = t0;
  let done = 0;
  let fields: Record<string, string | number> = {};
  const line = (): void => {
    const secs = (performance.now() - t0) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    const info = Object.entries(fields).map(([k, v]) => `${k} ${typeof v === 'number' ? v.toFixed(4).replace(/\.?0+$/, '') : v}`).join(' ');
    process.stderr.write(`${title} ${done}/${total} (${((100 * done) / Math.max(1, total)).toFixed(0)}%) ${info} | ${rate.toFixed(0)} img/s | ETA ${fmtSecs(rate > 0 ? (total - done) / rate : NaN)}\n`);
  };
  return {
    update(d, f = {}) {
      done = d;
      fields = f;
      const now = performance.now();
      if (now - last >= every * 1000) {
        last = now;
        line();
      }
    },
    stop() {},
  };
}
