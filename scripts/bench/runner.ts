// The benchmark's measuring process. scripts/bench.ts bundles this file with the firmware's own
// esbuild options and runs it as a child `node` process with one job (JSON in argv[2]); it
// prints one JSON report on stdout. Keeping our measurements in their own process lets the
// benchmark read their CPU time and peak RSS apart from Postfix, the peers and the harness.
//
// CPU is read with process.cpuUsage() (getrusage: every thread of the process, so OpenSSL,
// libuv's pool and the garbage collector count) around the timed loop only, after a warm-up:
// process start-up and loading the bundle are left out, as a probe pays them once, not per
// measurement.

import { performance } from 'node:perf_hooks';
import { measure } from '../../firmware/measure/driver';
import type { MeasureOptions } from '../../firmware/measure/options';
import type { SmtpResult } from '../../firmware/result';

/** Full STARTTLS measurements against one port, `concurrency` at a time. */
export interface HandshakesJob {
  kind: 'handshakes';
  port: number;
  count: number;
  concurrency: number;
  warmup: number;
  sni: string;
  ca?: string[];
}

/** `perPort` measurements against each flooding port, all started at once. */
export interface FloodJob {
  kind: 'flood';
  ports: number[];
  perPort: number;
}

/** Measurements against a tarpit, one started every `spacingMs`, each with deadline `timeoutMs`. */
export interface DeadlineJob {
  kind: 'deadline';
  port: number;
  count: number;
  timeoutMs: number;
  spacingMs: number;
}

export type Job = HandshakesJob | FloodJob | DeadlineJob;

export type Tally = Record<string, number>;

export interface HandshakesReport {
  kind: 'handshakes';
  cpuMs: number;
  wallMs: number;
  statuses: Tally;
}

export interface FloodReport {
  kind: 'flood';
  /** RSS after loading, before the first measurement */
  baselineRssKiB: number;
  /** peak RSS of the whole process life (getrusage ru_maxrss) */
  maxRssKiB: number;
  /** the longest of the measurements */
  slowestMs: number;
  statuses: Tally;
  findings: Tally;
}

export interface DeadlineReport {
  kind: 'deadline';
  /** per measurement: ms from the deadline to the promise settling */
  overshootMs: number[];
  statuses: Tally;
}

export type Report = HandshakesReport | FloodReport | DeadlineReport;

function count(tally: Tally, key: string): void {
  tally[key] = (tally[key] ?? 0) + 1;
}

function loopback(port: number): MeasureOptions {
  return { target: '127.0.0.1', port, allowPrivate: true };
}

async function handshakes(job: HandshakesJob): Promise<HandshakesReport> {
  const options: MeasureOptions = { ...loopback(job.port), sni: job.sni, ...(job.ca ? { ca: job.ca } : {}) };
  for (let i = 0; i < job.warmup; i += 1) await measure(options);
  const statuses: Tally = {};
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < job.count) {
      next += 1;
      count(statuses, (await measure(options)).status);
    }
  };
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  const wallMs = performance.now() - wallBefore;
  const cpu = process.cpuUsage(cpuBefore);
  return { kind: 'handshakes', cpuMs: (cpu.user + cpu.system) / 1000, wallMs, statuses };
}

async function floodRun(job: FloodJob): Promise<FloodReport> {
  const baselineRssKiB = Math.round(process.memoryUsage().rss / 1024);
  const statuses: Tally = {};
  const findings: Tally = {};
  let slowestMs = 0;
  const one = async (port: number): Promise<void> => {
    const result: SmtpResult = await measure(loopback(port));
    count(statuses, result.status);
    for (const finding of result.findings) count(findings, finding);
    slowestMs = Math.max(slowestMs, result.rt);
  };
  await Promise.all(job.ports.flatMap((port) => Array.from({ length: job.perPort }, () => one(port))));
  return { kind: 'flood', baselineRssKiB, maxRssKiB: process.resourceUsage().maxRSS, slowestMs, statuses, findings };
}

async function deadlines(job: DeadlineJob): Promise<DeadlineReport> {
  const statuses: Tally = {};
  const overshootMs: number[] = [];
  const one = async (): Promise<void> => {
    const started = performance.now();
    const result = await measure({ ...loopback(job.port), timeoutMs: job.timeoutMs });
    overshootMs.push(performance.now() - started - job.timeoutMs);
    count(statuses, result.status);
  };
  const running: Promise<void>[] = [];
  for (let i = 0; i < job.count; i += 1) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, job.spacingMs));
    running.push(one());
  }
  await Promise.all(running);
  return { kind: 'deadline', overshootMs, statuses };
}

function run(job: Job): Promise<Report> {
  switch (job.kind) {
    case 'handshakes':
      return handshakes(job);
    case 'flood':
      return floodRun(job);
    case 'deadline':
      return deadlines(job);
  }
}

run(JSON.parse(process.argv[2] ?? '') as Job).then(
  (report) => process.stdout.write(`${JSON.stringify(report)}\n`),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
