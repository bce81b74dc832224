// Runs inside the Node being measured (Debian's Node 18 under qemu-user, or this machine's):
// loads the firmware bundle and runs its `agent` command in this process, and reads V8's
// memory figures when scripts/footprint.ts says so on stdin:
//
//   idle   full collection, then the figures: the agent connected, doing nothing
//   busy   from now on, sample the figures and keep the peaks (the controller then sends work)
//   after  stop sampling; full collection, then the figures; write the report and exit
//
// Each command is answered with one line on stdout ("idle", "busy", "after") once done; the
// agent itself logs to stderr. Compiled to plain JavaScript and started with --expose-gc.
//
// usage: node --expose-gc [V8 flags] footprint-runner.js BUNDLE REPORT_FILE AGENT_ARGS...

import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

export interface MemoryFigures {
  heapUsed: number;
  heapTotal: number;
  external: number;
  rss: number;
}

export interface RunnerReport {
  loadMs: number;
  idle: MemoryFigures;
  /** the highest of each figure sampled while busy */
  busy: MemoryFigures;
  /** after the work and a full collection: what stays */
  after: MemoryFigures;
}

const SAMPLE_MS = 20;

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

function main(): void {
  const [bundle, reportFile, ...agentArgs] = process.argv.slice(2);
  if (!bundle || !reportFile) throw new Error('usage: footprint-runner BUNDLE REPORT_FILE AGENT_ARGS...');

  const loadStarted = performance.now();
  // The bundle is CommonJS; required (not run) it exports the command line's main().
  const cli = require(bundle) as { main(argv: string[]): Promise<number> };
  const loadMs = performance.now() - loadStarted;
  cli.main(['agent', ...agentArgs]).then(
    (code) => {
      process.stderr.write(`footprint-runner: the agent ended (${code}) before the report\n`);
      process.exit(1);
    },
    (error: unknown) => {
      process.stderr.write(`footprint-runner: ${String(error)}\n`);
      process.exit(1);
    },
  );

  let idle: MemoryFigures | undefined;
  let busy: MemoryFigures | undefined;
  let sampler: NodeJS.Timeout | undefined;
  createInterface({ input: process.stdin }).on('line', (command) => {
    switch (command) {
      case 'idle':
        collect();
        idle = figures();
        break;
      case 'busy': {
        const peak = figures();
        busy = peak;
        sampler = setInterval(() => {
          const now = figures();
          for (const key of Object.keys(peak) as (keyof MemoryFigures)[]) peak[key] = Math.max(peak[key], now[key]);
        }, SAMPLE_MS);
        break;
      }
      case 'after': {
        clearInterval(sampler);
        collect();
        if (!idle || !busy) throw new Error('after before idle and busy');
        const report: RunnerReport = { loadMs, idle, busy, after: figures() };
        writeFileSync(reportFile, JSON.stringify(report));
        process.stdout.write('after\n', () => process.exit(0));
        return;
      }
      default:
        throw new Error(`unknown command ${JSON.stringify(command)}`);
    }
    process.stdout.write(`${command}\n`);
  });
}

main();
