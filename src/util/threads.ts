// How many intra-op threads onnxruntime sessions get when the caller asks for its default (0): one per physical
// core this process may run on. onnxruntime's own default is meant to be the same, but it reads the core count
// off its CPU tables, and on a 2-vCPU AMD EPYC (family 26) it ran every session on one thread: ResNet-18's
// fused PGD call took 110 ms with the default, 110 with 1 thread and 69 with 2 (measured).
// Hand-written: Node reports logical CPUs only; the core topology is in Linux's sysfs.
import fs from 'node:fs';
import os from 'node:os';
import { UserError } from './errors.js';

let cached: number | undefined;

/** Physical cores among the CPUs (sibling hyperthreads counted once), or undefined where sysfs does not say. */
function physicalCores(cpus: number): number | undefined {
  const cores = new Set<string>();
  try {
    for (let c = 0; c < cpus; c++) cores.add(fs.readFileSync(`/sys/devices/system/cpu/cpu${c}/topology/thread_siblings_list`, 'utf8').trim());
  } catch {
    return undefined;
  }
  return cores.size || undefined;
}

/**
 * The thread count for: `env` (HYDRA_THREADS: a positive integer wins), else the `usable` CPUs (the process's
 * affinity) capped at their share of the `physical` cores among `all` CPUs (hyperthreads counted once).
 */
export function threadsFor(env: string | undefined, usable: number, all: number, physical: number | undefined): number {
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1) throw new UserError(`HYDRA_THREADS must be a positive integer, got '${env}'`);
    return n;
  }
  return Math.max(1, physical ? Math.round((usable * Math.min(physical, all)) / all) : usable);
}

/** Intra-op threads for an onnxruntime session asked to use the default (threadsFor on this process and machine). */
export function defaultThreads(): number {
  if (cached !== undefined) return cached;
  const all = os.cpus().length;
  cached = threadsFor(process.env.HYDRA_THREADS, os.availableParallelism(), all, physicalCores(all));
  return cached;
}
