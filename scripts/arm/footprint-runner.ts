// Runs inside the Node being measured (Debian's Node 18 under qemu-user, or this machine's):
// loads the firmware bundle, reads V8's heap figures at rest, then runs the bundle's own
// `measure --targets` with N measurements at once and samples the figures while they run.
// Started by scripts/footprint.ts with --expose-gc, compiled to plain JavaScript; writes its
// report as JSON to the file given.
//
// usage: node --expose-gc footprint-runner.js BUNDLE TARGETS_FILE CONCURRENCY CA_FILE SNI REPORT_FILE

import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export interface MemoryFigures {
  heapUsed: number;
  heapTotal: number;
  external: number;
  rss: number;
}

export interface RunnerReport {
  loadMs: number;
  idle: MemoryFigures;
  /** the highest of each figure sampled while the measurements ran */
  busy: MemoryFigures;
  /** after the measurements and a full collection: what stays */
  after: MemoryFigures;
  results: number;
  statuses: Record<string, number>;
  busyMs: number;
}

const SAMPLE_MS = 20;
const SETTLE_MS = 200;

function collect(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  gc();
  gc();
}

function figures(): MemoryFigures {
  const { heapUsed, heapTotal, external, rss } = process.memoryUsage();
  return { heapUsed, heapTotal, external, rss };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  const [bundle, targetsFile, concurrency, caFile, sni, reportFile] = process.argv.slice(2);
  if (!bundle || !targetsFile || !concurrency || !caFile || !sni || !reportFile) throw new Error('usage: footprint-runner BUNDLE TARGETS CONCURRENCY CA SNI REPORT');

  const loadStarted = performance.now();
  // The bundle is CommonJS; required (not run) it exports the command line's main().
  const cli = require(bundle) as { main(argv: string[]): Promise<number> };
  const loadMs = performance.now() - loadStarted;

  await sleep(SETTLE_MS);
  collect();
  const idle = figures();

  // The results go nowhere but into the tally: the runner's stdout is not the measurement's.
  const statuses: Record<string, number> = {};
  let results = 0;
  let pending = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array): boolean => {
    pending += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      const status = (JSON.parse(line) as { status: string }).status;
      statuses[status] = (statuses[status] ?? 0) + 1;
      results++;
    }
    return true;
  }) as typeof process.stdout.write;

  const busy = figures();
  const sampler = setInterval(() => {
    const now = figures();
    for (const key of Object.keys(busy) as (keyof MemoryFigures)[]) busy[key] = Math.max(busy[key], now[key]);
  }, SAMPLE_MS);
  const busyStarted = performance.now();
  const code = await cli.main(['measure', '--targets', targetsFile, '--concurrency', concurrency, '--allow-private', '--ca', caFile, '--sni', sni, '--timeout', '120000']);
  const busyMs = performance.now() - busyStarted;
  clearInterval(sampler);
  process.stdout.write = write;
  if (code !== 0) throw new Error(`measure exited ${code}`);

  await sleep(SETTLE_MS);
  collect();
  const report: RunnerReport = { loadMs, idle, busy, after: figures(), results, statuses, busyMs };
  writeFileSync(reportFile, JSON.stringify(report));
}

main().catch((error: unknown) => {
  process.stderr.write(`footprint-runner: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
  process.exitCode = 1;
});
