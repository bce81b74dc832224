// `npm run footprint`: what the firmware costs on the probe, as a table, against the figures
// kept in footprint.json (so a change that grows the footprint shows as a diff there too).
//
//   bundle        size and gzip size of the minified bundle, and its largest inputs (esbuild
//                 metafile)
//   cold start    wall time of `smtp-probe measure --help` from spawn to exit, and of the agent
//                 from spawn to online (its status seen by the controller through the broker):
//                 natively, and on Debian's Node 18 under qemu-user (armhf, arm64)
//   memory        the agent (`smtp-probe agent`, run inside scripts/arm/footprint-runner.ts with
//                 the launcher's V8 flags) connected to the embedded broker on loopback: V8 heap
//                 used and external memory at rest, and the peaks while it runs N measurements at
//                 once, requested by the reference controller, against a scripted STARTTLS peer on
//                 127.0.0.1 that holds each session a moment so that they overlap. Under qemu-user
//                 the RSS is the emulator's, so only V8's figures are shown there; natively RSS too.
//   budget        the agent limits derived from these figures (scripts/package/budget.ts)
//
// Timings on a shared machine are noisy: they are medians of a few runs, for orientation, and
// nothing here asserts them.
//
// usage: npx tsx scripts/footprint.ts [armhf] [arm64] [--native-only] [--no-save]

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { bundleOptions } from '../build.config';
import { testCerts } from '../test/helpers/certs';
import { type ChildOutput, childOutput } from '../test/helpers/node-command';
import { BANNER, STARTTLS_READY, answerQuit, expect, pause, reply, send, startPeer, startTls } from '../test/helpers/peers';
import { type ArmArch, parseArches } from './arm/arch';
import type { MemoryFigures, RunnerReport } from './arm/footprint-runner';
import { ARM_CACHE, armNodeCommand, prepareSysroot, sysrootNodeVersion } from './arm/sysroot';
import { Controller, startEmbeddedBroker } from './controller';
import { FOOTPRINT_FILE, type MeasuredCosts, PROBE_MODEL, deriveBudget, nodeFlags } from './package/budget';
import type { ProbeStatus, PublishedResult } from '../firmware/agent/protocol';

const ROOT = join(__dirname, '..');
const WORK = join(ARM_CACHE, 'footprint');
const CONCURRENCY = 50;
const START_RUNS = 3;
const TOP_INPUTS = 10;
/**
 * How long the peer holds each session before answering EHLO, so that all measurements overlap:
 * longer than it takes the agent to accept all the requests (seconds when emulated), shorter
 * than the driver's 10 s command timeout.
 */
const HOLD_MS = { native: 2_000, emulated: 8_000 } as const;
/** pause between the agent coming online and the idle reading */
const SETTLE_MS = 1_000;
const RUN_LIMIT_MS = 10 * 60_000;
const PROBE_ID = 'probe-footprint';
/** the measurement deadline asked for: generous, an emulated TLS handshake is slow */
const MEASUREMENT_TIMEOUT_MS = 120_000;
const MIB = 1024 * 1024;

type RuntimeName = 'native' | ArmArch;

interface RuntimeFigures {
  node: string;
  cold_start_ms: number;
  agent_ready_ms: number;
  /** the most measurements the agent's status reported running at once (its status every second) */
  peak_running: number;
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

function run(command: string[]): Promise<ChildOutput> {
  const [file, ...args] = command as [string, ...string[]];
  return childOutput(spawn(file, args), RUN_LIMIT_MS);
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

/** Cold start: `measure --help` from spawn to exit, the median of a few runs. */
async function coldStart(name: RuntimeName, node: string[], bundle: string): Promise<number> {
  const starts: number[] = [];
  for (let i = 0; i < START_RUNS; i++) {
    const started = await run([...node, bundle, 'measure', '--help']);
    if (started.code !== 0) throw new Error(`${name}: measure --help exited ${started.code}: ${started.stderr}`);
    starts.push(started.ms);
  }
  return median(starts);
}

interface AgentFigures {
  readyMs: number;
  peakRunning: number;
  report: RunnerReport;
}

/** The agent in the runner: time to online, then its memory at rest, busy and after. */
async function measureAgent(name: RuntimeName, node: string[], files: { bundle: string; runner: string }, peerPort: number): Promise<AgentFigures> {
  const dir = mkdtempSync(join(WORK, `agent-${name}-`));
  const reportFile = join(dir, 'report.json');
  const broker = await startEmbeddedBroker();
  const controller = await Controller.start({ brokerUrl: broker.url, resultsFile: join(dir, 'results.jsonl'), protocolVersion: 4, ackTimeoutMs: RUN_LIMIT_MS });
  const agentArgs = ['--broker', broker.url, '--id', PROBE_ID, '--data', join(dir, 'data'), '--allow-private', '--mqtt-version', '4', '--max-concurrent', String(CONCURRENCY), '--target-burst', String(CONCURRENCY), '--status-interval-s', '1'];
  const [file, ...args] = [...node, '--expose-gc', ...nodeFlags(), files.runner, files.bundle, reportFile, ...agentArgs] as [string, ...string[]];
  const started = performance.now();
  const runner = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let log = '';
  runner.stderr.setEncoding('utf8').on('data', (text: string) => (log += text.slice(0, 64 * 1024)));
  const exited = new Promise<number | null>((resolve) => runner.once('exit', (code) => resolve(code)));
  const answers = createInterface({ input: runner.stdout });
  const command = (what: 'idle' | 'busy' | 'after'): Promise<void> =>
    new Promise((resolve, reject) => {
      answers.once('line', (line) => (line === what ? resolve() : reject(new Error(`${name}: runner answered ${line} to ${what}`))));
      runner.stdin.write(`${what}\n`);
    });
  try {
    const quit = exited.then((code) => Promise.reject(new Error(`${name}: the agent exited (${code}):\n${log}`)));
    await Promise.race([controller.waitForProbes([PROBE_ID], RUN_LIMIT_MS), quit]);
    const readyMs = performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    await command('idle');
    await command('busy');
    let peakRunning = 0;
    controller.on('status', (status: ProbeStatus) => {
      if (status.probe_id === PROBE_ID) peakRunning = Math.max(peakRunning, status.queue?.running ?? 0);
    });
    const stored = new Promise<PublishedResult[]>((resolve) => {
      const results: PublishedResult[] = [];
      controller.on('stored', (result: PublishedResult) => {
        results.push(result);
        if (results.length === CONCURRENCY) resolve(results);
      });
    });
    const acks = await Promise.all(
      Array.from({ length: CONCURRENCY }, (_, index) => controller.request(PROBE_ID, { type: 'smtp', target: '127.0.0.1', port: peerPort, timeout: MEASUREMENT_TIMEOUT_MS }, `footprint-${index}`)),
    );
    const refused = acks.filter((ack) => !ack.accepted);
    if (refused.length > 0) throw new Error(`${name}: the agent refused ${refused.length} requests: ${JSON.stringify(refused[0])}`);
    const results = await Promise.race([stored, quit]);
    const notOk = results.filter((result) => result.status !== 'ok');
    if (notOk.length > 0) throw new Error(`${name}: ${notOk.length} measurements not ok, e.g. ${JSON.stringify(notOk[0]).slice(0, 500)}`);
    await command('after');
    await exited;
    return { readyMs, peakRunning, report: JSON.parse(readFileSync(reportFile, 'utf8')) as RunnerReport };
  } finally {
    if (runner.exitCode === null && runner.signalCode === null) runner.kill('SIGKILL');
    await controller.close();
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measureRuntime(name: RuntimeName, node: string[], files: { bundle: string; runner: string }, peerPort: number): Promise<RuntimeFigures> {
  const version = await run([...node, '-p', 'process.version + " " + process.arch']);
  if (version.code !== 0) throw new Error(`${name}: node does not start: ${version.stderr}`);
  const coldStartMs = await coldStart(name, node, files.bundle);
  const { readyMs, peakRunning, report } = await measureAgent(name, node, files, peerPort);
  const heap = (figures: MemoryFigures): number => mib(figures.heapUsed);
  return {
    node: version.stdout.trim(),
    cold_start_ms: Math.round(coldStartMs),
    agent_ready_ms: Math.round(readyMs),
    peak_running: peakRunning,
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
    ['cold_start_ms', 'cold start: spawn to exit of measure --help, ms'],
    ['agent_ready_ms', 'cold start: spawn to agent online (status at the broker), ms'],
    ['bundle_load_ms', 'bundle load (require), ms'],
    ['peak_running', 'measurements running at once, most seen in the agent status'],
    ['heap_idle_mib', 'agent idle: V8 heap used, MiB'],
    ['external_idle_mib', 'agent idle: external memory, MiB'],
    ['heap_busy_mib', `agent, ${now.concurrency} measurements at once: V8 heap used (peak), MiB`],
    ['external_busy_mib', `agent, ${now.concurrency} at once: external memory (peak), MiB`],
    ['heap_after_mib', 'agent after them, full GC: V8 heap used, MiB'],
    ['rss_idle_mib', 'agent idle: RSS, MiB'],
    ['rss_busy_mib', `agent, ${now.concurrency} at once: RSS (peak), MiB`],
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
  console.log(`\nagent budget (scripts/package/budget.ts) for ${PROBE_MODEL.name} probes (${PROBE_MODEL.ramMiB} MiB RAM, ${PROBE_MODEL.heapBudgetMiB} MiB heap for the agent), from: idle agent heap ${now.budget_inputs.idleHeapMiB} MiB and ${now.budget_inputs.perMeasurementKiB} KiB per running measurement (the larger ARM figures), native overhead ${now.budget_inputs.nativeOverheadMiB} MiB`);
  console.log(`  node flags   ${budget.nodeFlags.join(' ')}`);
  console.log(`  config       ${JSON.stringify(budget.config)}`);
  console.log(`  live heap at these limits ${budget.liveAtLimitsMiB.toFixed(1)} MiB of a ${budget.liveTargetMiB} MiB target (budget ${budget.heapBudgetMiB} MiB); systemd MemoryMax ${budget.memoryMaxMiB}M`);
}

/**
 * The budget's inputs: the larger of the ARM figures measured now (arm64's 64-bit heap is the
 * bigger one; the same budget must hold on both), natively the overhead beside the heap; what
 * was not measured now is kept from footprint.json.
 */
function budgetInputs(runtimes: Footprint['runtimes'], previous: Partial<Footprint>): MeasuredCosts {
  const arm = [runtimes.armhf, runtimes.arm64].filter((figures): figures is RuntimeFigures => figures !== undefined);
  const native = runtimes.native;
  const kept = previous.budget_inputs;
  const idleHeapMiB = arm.length > 0 ? Math.max(...arm.map((figures) => figures.heap_idle_mib)) : kept?.idleHeapMiB;
  const perMeasurementKiB = arm.length > 0 ? Math.max(...arm.map((figures) => Math.round(((figures.heap_busy_mib - figures.heap_idle_mib) * 1024) / CONCURRENCY))) : kept?.perMeasurementKiB;
  const nativeOverheadMiB = native?.rss_busy_mib !== undefined ? Math.round((native.rss_busy_mib - native.heap_busy_mib) * 10) / 10 : kept?.nativeOverheadMiB;
  if (idleHeapMiB === undefined || perMeasurementKiB === undefined || nativeOverheadMiB === undefined) throw new Error('the budget needs ARM and native figures: run without --native-only once');
  return { idleHeapMiB, perMeasurementKiB, nativeOverheadMiB };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'native-only': { type: 'boolean' }, 'no-save': { type: 'boolean' } } });
  const arches = values['native-only'] ? [] : parseArches(positionals);
  for (const arch of arches) prepareSysroot(arch);

  const files = await buildFiles();
  const certs = testCerts();
  const runtimes: Footprint['runtimes'] = {};
  const plan: [RuntimeName, string[]][] = [['native', [process.execPath]], ...arches.map((arch): [RuntimeName, string[]] => [arch, armNodeCommand(arch)])];
  for (const [name, node] of plan) {
    console.error(`footprint: measuring ${name}${name === 'native' ? '' : ` (Node ${sysrootNodeVersion(name)} under qemu-user)`} ...`);
    const peer = await startPeer([
      send(BANNER),
      expect(/^EHLO /i),
      pause(name === 'native' ? HOLD_MS.native : HOLD_MS.emulated),
      send(reply(250, ['mx.test', 'PIPELINING', 'STARTTLS'])),
      expect(/^STARTTLS$/i),
      startTls(STARTTLS_READY, certs.valid),
      expect(/^EHLO /i),
      send(reply(250, ['mx.test', 'PIPELINING'])),
      ...answerQuit(),
    ]);
    try {
      runtimes[name] = await measureRuntime(name, node, files, peer.port);
    } finally {
      await peer.close();
    }
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
