// A command never outlives what started it. Killing `npx onnx-hydra …` with SIGKILL (or a SIGTERM that npm
// passes only to the shell it started) leaves the node process running, as does killing `onnx-hydra run`
// with SIGKILL for its stage processes. A small worker thread watches the starting processes and ends this
// one when they are gone; it is a thread, so it also fires while the main thread is busy in a long
// synchronous computation. (Hand-written: Node has no PR_SET_PDEATHSIG.)
//
// Watched: the `run` process that started a stage (it passes its pid in ONNX_HYDRA_PARENT_PID), or, under
// npm/npx (npm sets npm_command), the processes from our parent up to and including npm itself. A command
// started from a shell (`nohup onnx-hydra run … &`) is not tied to the shell's life.
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';

export const PARENT_PID_ENV = 'ONNX_HYDRA_PARENT_PID';

/** the command line of npm or npx itself */
const NPM_COMMAND = /\bnpm\b|\bnpx\b|npm-cli\.js|npx-cli\.js/;

interface ProcInfo { ppid: number; start: string; cmd: string }

/** /proc/<pid>/stat's parent pid and start time, and its command line (Linux); undefined elsewhere or when gone. */
function procInfo(pid: number): ProcInfo | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the command name in parentheses (which may itself hold spaces or parentheses)
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    return { ppid: Number(rest[1]), start: rest[19] ?? '', cmd };
  } catch {
    return undefined;
  }
}

/** The processes whose end should end this one: [pid, start time] pairs (start time guards against pid reuse). */
function watchedProcesses(): [number, string][] {
  const own = Number(process.env[PARENT_PID_ENV]);
  if (Number.isInteger(own) && own > 1) {
    const info = procInfo(own);
    return [[own, info?.start ?? '']];
  }
  if (!process.env.npm_command) return [];
  const out: [number, string][] = [];
  let pid = process.ppid;
  for (let depth = 0; depth < 4 && pid > 1; depth++) {
    const info = procInfo(pid);
    if (!info) break;
    out.push([pid, info.start]);
    if (NPM_COMMAND.test(info.cmd)) break;
    pid = info.ppid;
  }
  return out.length ? out : [[process.ppid, '']];
}

const WATCHER = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const alive = ([pid, start]) => {
  if (!fs.existsSync('/proc/self/stat')) { try { process.kill(pid, 0); return true; } catch { return false; } }
  try {
    const stat = fs.readFileSync('/proc/' + pid + '/stat', 'utf8');
    return !start || stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] === start;
  } catch { return false; }
};
const parent = workerData.ppid;
setInterval(() => {
  if (process.ppid === parent && workerData.watched.every(alive)) return;
  process.kill(workerData.pid, 'SIGTERM');
  setTimeout(() => process.kill(workerData.pid, 'SIGKILL'), 3000);
}, 500);
`;

let started = false;

/** Start the watcher (once per process); a no-op when nothing needs watching. */
export function exitWithStarter(): void {
  if (started) return;
  started = true;
  // under npm, a parent that is already init (and not npm itself, as in a container started with npx) means
  // the starter died before this line ran
  if (process.env.npm_command && !process.env[PARENT_PID_ENV] && process.ppid === 1 && !NPM_COMMAND.test(procInfo(1)?.cmd ?? 'npm')) {
    process.kill(process.pid, 'SIGTERM');
    return;
  }
  const watched = watchedProcesses();
  if (!watched.length) return;
  const w = new Worker(WATCHER, { eval: true, workerData: { watched, ppid: process.ppid, pid: process.pid } });
  w.unref();
}
