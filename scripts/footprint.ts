// `npm run footprint`: what the firmware costs on the probe, as a table, against the figures
// kept in footprint.json (so a change that grows the footprint shows as a diff there too).
//
//   bundle        size and gzip size of the minified bundle, and its largest inputs (esbuild
//                 metafile)
//   cold start    wall time of `smtp-probe measure --help` from spawn to exit: natively, and on
//                 Debian's Node 18 under qemu-user (armhf, arm64)
//   memory        V8 heap used and external memory with the bundle loaded and idle, and the
//                 peak while N measurements run at once (scripts/arm/footprint-runner.ts runs
//                 the bundle's own `measure --targets` against a scripted STARTTLS peer on
//                 127.0.0.1 that holds each session a moment, so they overlap). Under qemu-user
//                 the RSS is the emulator's, so only V8's figures are shown there; natively RSS
//                 too.
//   budget        the agent limits derived from these figures (scripts/package/budget.ts)
//
// Timings on a shared machine are noisy: they are medians of a few runs, for orientation, and
// nothing here asserts them.
//
// usage: npx tsx scripts/footprint.ts [armhf] [arm64] [--native-only] [--no-save]

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { bundleOptions } from '../build.config';
import { testCerts } from '../test/helpers/certs';
import { BANNER, STARTTLS_READY, answerQuit, expect, pause, reply, send, startPeer, startTls } from '../test/helpers/peers';
import { type ArmArch, parseArches } from './arm/arch';
import type { MemoryFigures, RunnerReport } from './arm/footprint-runner';
import { ARM_CACHE, armNodeCommand, prepareSysroot, sysrootNodeVersion } from './arm/sysroot';
import { FOOTPRINT_FILE, type MeasuredCosts, deriveBudget } from './package/budget';

const ROOT = join(__dirname, '..');
const WORK = join(ARM_CACHE, 'footprint');
const CONCURRENCY = 50;
const START_RUNS = 3;
const TOP_INPUTS = 10;
/** how long the peer holds each session before answering EHLO, so the measurements overlap */
const HOLD_MS = 1000;
const RUN_LIMIT_MS = 10 * 60_000;
const MIB = 1024 * 1024;

type RuntimeName = 'native' | ArmArch;

interface RuntimeFigures {
  node: string;
  cold_start_ms: number;
  bundle_load_ms: number;
  heap_idle_mib: number;
  external_idle_mib: number;
  heap_busy_mib: number;
  external_busy_mib: number;
  heap_after_mib: number;
  /** natively only: under qemu-user it would be the emulator's */
  rss_idle_mib?: number;
  rss_busy_mib?: number;
}

interface Footprint {
  concurrency: number;
  bundle: { bytes: number; gzip_bytes: number; inputs: Record<string, number> };
  runtimes: Partial<Record<RuntimeName, RuntimeFigures>>;
  budget_inputs: MeasuredCosts;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(command: string[], limitMs: number = RUN_LIMIT_MS): Promise<Run> {
  return new Promise((resolve, reject) => {
    const [file, ...args] = command as [string, ...string[]];
    const started = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
  });
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const mib = (bytes: number): number => Math.round((bytes / MIB) * 10) / 10;

async function buildFiles(): Promise<{ bundle: string; runner: string; figures: Footprint['bundle'] }> {
  mkdirSync(WORK, { recursive: true });
  const bundle = join(WORK, 'smtp-probe.js');
  const result = await build({ ...bundleOptions, outfile: bundle, metafile: true });
  const output = Object.values(result.metafile?.outputs ?? {})[0];
  const inputs = Object.entries(output?.inputs ?? {})
    .map(([file, info]) => [file, info.bytesInOutput] as const)
    .sort((a, b) => b[1] - a[1])
    .slice(0, TOP_INPUTS);
  const code = readFileSync(bundle);
  const runner = join(WORK, 'footprint-runner.js');
  await build({ entryPoints: [join(__dirname, 'arm', 'footprint-runner.ts')], outfile: runner, bundle: true, platform: 'node', target: 'node18', format: 'cjs', logLevel: 'warning' });
  return { bundle, runner, figures: { bytes: code.length, gzip_bytes: gzipSync(code, { level: 9 }).length, inputs: Object.fromEntries(inputs) } };
}

async function measureRuntime(name: RuntimeName, node: string[], files: { bundle: string; runner: string }, targetsFile: string, caFile: string): Promise<RuntimeFigures> {
  const version = await run([...node, '-p', 'process.version + " " + process.arch']);
  if (version.code !== 0) throw new Error(`${name}: node does not start: ${version.stderr}`);

  const starts: number[] = [];
  for (let i = 0; i < START_RUNS; i++) {
    const started = await run([...node, files.bundle, 'measure', '--help']);
    if (started.code !== 0) throw new Error(`${name}: measure --help exited ${started.code}: ${started.stderr}`);
    starts.push(started.ms);
  }

  const reportFile = join(WORK, `report-${name}.json`);
  rmSync(reportFile, { force: true });
  const measured = await run([...node, '--expose-gc', files.runner, files.bundle, targetsFile, String(CONCURRENCY), caFile, 'mx.test', reportFile]);
  if (measured.code !== 0 || !existsSync(reportFile)) throw new Error(`${name}: footprint runner failed (exit ${measured.code}): ${measured.stderr}`);
  const report = JSON.parse(readFileSync(reportFile, 'utf8')) as RunnerReport;
  if (report.results !== CONCURRENCY || report.statuses.ok !== CONCURRENCY) throw new Error(`${name}: expected ${CONCURRENCY} ok results, got ${JSON.stringify(report.statuses)}`);

  const heap = (figures: MemoryFigures): number => mib(figures.heapUsed);
  return {
    node: version.stdout.trim(),
    cold_start_ms: Math.round(median(starts)),
    bundle_load_ms: Math.round(report.loadMs),
    heap_idle_mib: heap(report.idle),
    external_idle_mib: mib(report.idle.external),
    heap_busy_mib: heap(report.busy),
    external_busy_mib: mib(report.busy.external),
    heap_after_mib: heap(report.after),
    ...(name === 'native' ? { rss_idle_mib: mib(report.idle.rss), rss_busy_mib: mib(report.busy.rss) } : {}),
  };
}

function readPrevious(): Partial<Footprint> {
  try {
    return JSON.parse(readFileSync(FOOTPRINT_FILE, 'utf8')) as Partial<Footprint>;
  } catch {
    return {};
  }
}

function change(now: number, before: number | undefined): string {
  if (before === undefined) return 'new';
  if (now === before) return '=';
  const delta = now - before;
  const percent = before === 0 ? '' : ` (${delta > 0 ? '+' : ''}${((delta / before) * 100).toFixed(1)}%)`;
  return `${delta > 0 ? '+' : ''}${Math.round(delta * 10) / 10}${percent}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows.map((row) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join('   ')).join('\n');
}

function report(now: Footprint, previous: Partial<Footprint>): void {
  const rows: string[][] = [['figure', 'now', 'previous', 'change']];
  const add = (label: string, value: number | undefined, before: number | undefined): void => {
    if (value === undefined) return;
    rows.push([label, String(value), before === undefined ? '-' : String(before), change(value, before)]);
  };
  add('bundle bytes', now.bundle.bytes, previous.bundle?.bytes);
  add('bundle gzip bytes', now.bundle.gzip_bytes, previous.bundle?.gzip_bytes);
  const labels: [keyof RuntimeFigures, string][] = [
    ['cold_start_ms', 'cold start to exit of measure --help, ms'],
    ['bundle_load_ms', 'bundle load (require), ms'],
    ['heap_idle_mib', 'V8 heap used, idle, MiB'],
    ['external_idle_mib', 'external memory, idle, MiB'],
    ['heap_busy_mib', `V8 heap used, ${now.concurrency} measurements at once (peak), MiB`],
    ['external_busy_mib', `external memory, ${now.concurrency} at once (peak), MiB`],
    ['heap_after_mib', 'V8 heap used after them and a full GC, MiB'],
    ['rss_idle_mib', 'RSS idle, MiB'],
    ['rss_busy_mib', `RSS, ${now.concurrency} at once (peak), MiB`],
  ];
  for (const [runtime, figures] of Object.entries(now.runtimes) as [RuntimeName, RuntimeFigures][]) {
    rows.push([`${runtime}: Node ${figures.node}`, '', '', '']);
    for (const [key, label] of labels) {
      const value = figures[key];
      if (typeof value === 'number') add(`  ${label}`, value, previous.runtimes?.[runtime]?.[key] as number | undefined);
    }
  }
  console.log(table(rows));

  console.log('\nlargest inputs of the bundle (bytes in the output)');
  const inputRows: string[][] = [['input', 'now', 'previous', 'change']];
  for (const [file, bytes] of Object.entries(now.bundle.inputs)) {
    const before = previous.bundle?.inputs?.[file];
    inputRows.push([file, String(bytes), before === undefined ? '-' : String(before), change(bytes, before)]);
  }
  console.log(table(inputRows));

  const budget = deriveBudget(now.budget_inputs);
  console.log(`\nagent budget (scripts/package/budget.ts), from: idle heap ${now.budget_inputs.idleHeapMiB} MiB and ${now.budget_inputs.perMeasurementKiB} KiB per running measurement on armhf, native overhead ${now.budget_inputs.nativeOverheadMiB} MiB`);
  console.log(`  node flags   ${budget.nodeFlags.join(' ')}`);
  console.log(`  config       ${JSON.stringify(budget.config)}`);
  console.log(`  live heap at these limits ${budget.liveAtLimitsMiB.toFixed(1)} MiB of a ${budget.liveTargetMiB} MiB target (budget ${budget.heapBudgetMiB} MiB); systemd MemoryMax ${budget.memoryMaxMiB}M`);
}

function budgetInputs(runtimes: Footprint['runtimes'], previous: Partial<Footprint>): MeasuredCosts {
  const armhf = runtimes.armhf;
  const native = runtimes.native;
  const kept = previous.budget_inputs;
  const idleHeapMiB = armhf?.heap_idle_mib ?? kept?.idleHeapMiB;
  const perMeasurementKiB = armhf ? Math.round(((armhf.heap_busy_mib - armhf.heap_idle_mib) * 1024) / CONCURRENCY) : kept?.perMeasurementKiB;
  const nativeOverheadMiB = native?.rss_busy_mib !== undefined ? Math.round((native.rss_busy_mib - native.heap_busy_mib) * 10) / 10 : kept?.nativeOverheadMiB;
  if (idleHeapMiB === undefined || perMeasurementKiB === undefined || nativeOverheadMiB === undefined) throw new Error('the budget needs the armhf and native figures: run without --native-only once');
  return { idleHeapMiB, perMeasurementKiB, nativeOverheadMiB };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'native-only': { type: 'boolean' }, 'no-save': { type: 'boolean' } } });
  const arches = values['native-only'] ? [] : parseArches(positionals);
  for (const arch of arches) prepareSysroot(arch);

  const files = await buildFiles();
  const certs = testCerts();
  const script = [
    send(BANNER),
    expect(/^EHLO /i),
    pause(HOLD_MS),
    send(reply(250, ['mx.test', 'PIPELINING', 'STARTTLS'])),
    expect(/^STARTTLS$/i),
    startTls(STARTTLS_READY, certs.valid),
    expect(/^EHLO /i),
    send(reply(250, ['mx.test', 'PIPELINING'])),
    ...answerQuit(),
  ];
  const peer = await startPeer(script);
  const targetsFile = join(WORK, 'targets.txt');
  writeFileSync(targetsFile, `127.0.0.1:${peer.port}\n`.repeat(CONCURRENCY));

  const runtimes: Footprint['runtimes'] = {};
  try {
    const plan: [RuntimeName, string[]][] = [['native', [process.execPath]], ...arches.map((arch): [RuntimeName, string[]] => [arch, armNodeCommand(arch)])];
    for (const [name, node] of plan) {
      console.error(`footprint: measuring ${name}${name === 'native' ? '' : ` (Node ${sysrootNodeVersion(name)} under qemu-user)`} ...`);
      runtimes[name] = await measureRuntime(name, node, files, targetsFile, certs.ca.certFile);
    }
  } finally {
    await peer.close();
  }

  const previous = readPrevious();
  const now: Footprint = { concurrency: CONCURRENCY, bundle: files.figures, runtimes: { ...previous.runtimes, ...runtimes }, budget_inputs: budgetInputs(runtimes, previous) };
  report({ ...now, runtimes }, previous);
  if (!values['no-save']) {
    writeFileSync(FOOTPRINT_FILE, JSON.stringify(now, null, 2) + '\n');
    console.log(`\nsaved to ${relative(ROOT, FOOTPRINT_FILE)}`);
  }
}

main().catch((error: unknown) => {
  console.error(`footprint: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
