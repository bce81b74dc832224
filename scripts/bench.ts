// `npm run bench`: figures, not assertions. Against a private Postfix on loopback
// (test/helpers/postfix.ts) and scripted peers on loopback (test/helpers/peers.ts):
//
//  (a) full STARTTLS measurements (banner, EHLO, STARTTLS, TLS, EHLO, QUIT) per second and CPU
//      ms per measurement at concurrency 1 and 50: ours, Postfix's posttls-finger and swaks
//      doing the same handshake with the same trust anchor and name check, and the ratios;
//  (b) peak RSS of one process running 200 measurements at once against flooding peers;
//  (c) how far past its deadline a measurement against a one-byte-a-second tarpit ends.
//
// How CPU is counted. Ours: a child `node` process runs the measurements from a bundle built
// with the firmware's esbuild options (scripts/bench/runner.ts) and reads process.cpuUsage()
// around the timed loop, after a warm-up, so start-up is left out (a probe starts once).
// Theirs: one process per handshake, as they are used; `bash` runs them through
// `xargs -P`, and its `times` builtin gives the user+sys CPU of all its children. The same batch
// with /bin/true is subtracted, which removes xargs's forks and also the exec of a minimal
// program, a small allowance in their favour.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { build } from 'esbuild';
import { bundleOptions } from '../build.config';
import { testCerts } from '../test/helpers/certs';
import { flood, type ScriptedPeer, sendPaced, startPeer } from '../test/helpers/peers';
import { POSTFIX_HOSTNAME, type PostfixInstance, startPostfix } from '../test/helpers/postfix';
import type { DeadlineReport, FloodReport, HandshakesReport, Job, Report, Tally } from './bench/runner';

const CONCURRENCIES = [1, 50] as const;
/** handshakes per run, by tool and concurrency: enough to average, small enough for ~2 minutes */
const RUNS = {
  ours: { 1: 300, 50: 1500 },
  'posttls-finger': { 1: 100, 50: 400 },
  swaks: { 1: 20, 50: 100 },
} as const;
const OUR_WARMUP = 20;
const FLOOD_PER_PEER = 100;
const FLOOD_BYTES_PER_CONNECTION = 16 * 1024 * 1024;
const DEADLINE_MS = 2_000;
const DEADLINE_RUNS = 20;
const DEADLINE_SPACING_MS = 100;

const TARGET_CPU_RATIO = 1 / 5;
const TARGET_RSS_MIB = 100;
const TARGET_OVERSHOOT_MS = 50;

type Tool = keyof typeof RUNS;

interface Row {
  tool: string;
  concurrency: number;
  runs: number;
  perSecond: number;
  cpuMs: number;
  note: string;
}

function output(file: string, args: string[]): Promise<{ stdout: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.once('error', reject);
    child.once('close', (code) => resolve({ stdout, code }));
  });
}

async function buildRunner(dir: string): Promise<string> {
  const outfile = join(dir, 'runner.js');
  await build({ ...bundleOptions, entryPoints: [join(__dirname, 'bench', 'runner.ts')], outfile, metafile: false });
  return outfile;
}

async function runJob<R extends Report>(runner: string, job: Job): Promise<R> {
  const { stdout, code } = await output(process.execPath, [runner, JSON.stringify(job)]);
  if (code !== 0) throw new Error(`bench runner failed (${code}) on ${job.kind}`);
  return JSON.parse(stdout) as R;
}

// `times` prints the shell's own user and system time, then its children's: "0m1.234s 0m0.567s".
const BATCH_SCRIPT = 'seq "$1" | xargs -P "$2" -I{} "${@:3}" >/dev/null 2>&1; status=$?; times; exit $status';

function seconds(text: string): number {
  const match = /^(\d+)m([\d.]+)s$/.exec(text);
  if (!match) throw new Error(`unexpected output of bash times: ${text}`);
  return Number(match[1]) * 60 + Number(match[2]);
}

/** Runs `command` `runs` times, `concurrency` at once; CPU of all the processes and wall time. */
async function batch(command: string[], runs: number, concurrency: number): Promise<{ cpuMs: number; wallMs: number; allSucceeded: boolean }> {
  const started = performance.now();
  const { stdout, code } = await output('bash', ['-c', BATCH_SCRIPT, 'bench-batch', String(runs), String(concurrency), ...command]);
  const wallMs = performance.now() - started;
  const children = stdout.trim().split('\n').at(-1)?.trim().split(/\s+/) ?? [];
  const [user, system] = children.map(seconds);
  if (user === undefined || system === undefined) throw new Error(`no times from the batch: ${stdout}`);
  return { cpuMs: (user + system) * 1000, wallMs, allSucceeded: code === 0 };
}

function theirCommand(tool: Exclude<Tool, 'ours'>, port: number, caFile: string): string[] {
  if (tool === 'posttls-finger') {
    // -c: no chat log; -l secure with -F: verify the chain with our CA, and the name mx.test
    // (the match argument), as ours does; a bracketed address: no DNS lookup.
    return ['posttls-finger', '-c', '-l', 'secure', '-F', caFile, '-s', POSTFIX_HOSTNAME, `[127.0.0.1]:${port}`, POSTFIX_HOSTNAME];
  }
  // --quit-after EHLO: with --tls, QUIT right after the EHLO that follows TLS; no MAIL, no DATA.
  // --helo/--from/--to given so swaks looks up no local name.
  return ['swaks', '--server', `127.0.0.1:${port}`, '--tls', '--tls-verify', '--tls-ca-path', caFile, '--tls-sni', POSTFIX_HOSTNAME, '--quit-after', 'EHLO', '--helo', 'bench.test', '--from', 'probe@bench.test', '--to', 'nobody@mx.test', '--hide-all'];
}

function tallyText(tally: Tally): string {
  return Object.entries(tally)
    .map(([key, value]) => `${key} ${value}`)
    .join(', ');
}

async function handshakeRows(runner: string, postfix: PostfixInstance): Promise<Row[]> {
  const { ca } = testCerts();
  const rows: Row[] = [];
  for (const concurrency of CONCURRENCIES) {
    const runs = RUNS.ours[concurrency];
    const report = await runJob<HandshakesReport>(runner, {
      kind: 'handshakes',
      port: postfix.ports.starttls,
      count: runs,
      concurrency,
      warmup: OUR_WARMUP,
      sni: POSTFIX_HOSTNAME,
      ca: [ca.cert],
    });
    const allOk = report.statuses.ok === runs;
    rows.push({ tool: 'ours', concurrency, runs, perSecond: (runs * 1000) / report.wallMs, cpuMs: report.cpuMs / runs, note: allOk ? '' : tallyText(report.statuses) });
  }
  for (const tool of ['posttls-finger', 'swaks'] as const) {
    const command = theirCommand(tool, postfix.ports.starttls, ca.certFile);
    // One untimed run, so the first smtpd start-up and disk caches count for nobody.
    await batch(command, 1, 1);
    for (const concurrency of CONCURRENCIES) {
      const runs = RUNS[tool][concurrency];
      const measured = await batch(command, runs, concurrency);
      const launcher = await batch(['true'], runs, concurrency);
      rows.push({
        tool,
        concurrency,
        runs,
        perSecond: (runs * 1000) / measured.wallMs,
        cpuMs: (measured.cpuMs - launcher.cpuMs) / runs,
        note: measured.allSucceeded ? '' : 'some runs FAILED',
      });
    }
  }
  return rows;
}

async function floodRss(runner: string, peers: ScriptedPeer[]): Promise<FloodReport> {
  // One peer sends an endless line, one an endless multi-line greeting.
  const endlessLine = await startPeer([flood('A'.repeat(64 * 1024), FLOOD_BYTES_PER_CONNECTION)]);
  peers.push(endlessLine);
  const endlessLines = await startPeer([flood(`220-${'x'.repeat(74)}\r\n`.repeat(800), FLOOD_BYTES_PER_CONNECTION)]);
  peers.push(endlessLines);
  return runJob<FloodReport>(runner, { kind: 'flood', ports: [endlessLine.port, endlessLines.port], perPort: FLOOD_PER_PEER });
}

async function overshoot(runner: string, peers: ScriptedPeer[]): Promise<DeadlineReport> {
  const tarpit = await startPeer([sendPaced('220 mx.test ESMTP one byte a second\r\n', { chunkSize: 1, pauseMs: 1000 })]);
  peers.push(tarpit);
  return runJob<DeadlineReport>(runner, { kind: 'deadline', port: tarpit.port, count: DEADLINE_RUNS, timeoutMs: DEADLINE_MS, spacingMs: DEADLINE_SPACING_MS });
}

function fixed(value: number, digits: number): string {
  return value.toFixed(digits);
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}

function report(rows: Row[], flooded: FloodReport, deadline: DeadlineReport): void {
  const ours = (concurrency: number): Row | undefined => rows.find((row) => row.tool === 'ours' && row.concurrency === concurrency);
  const ratio = (row: Row): string => {
    const mine = ours(row.concurrency);
    return row.tool === 'ours' || !mine ? '' : fixed(mine.cpuMs / row.cpuMs, 3);
  };
  console.log('\n(a) full STARTTLS handshake against Postfix (banner, EHLO, STARTTLS, TLS, EHLO, QUIT)\n');
  console.log(
    table(
      ['tool', 'concurrency', 'runs', 'per second', 'CPU ms each', 'ours / theirs (CPU)', 'note'],
      rows.map((row) => [row.tool, String(row.concurrency), String(row.runs), fixed(row.perSecond, 1), fixed(row.cpuMs, 2), ratio(row), row.note]),
    ),
  );
  console.log('  ours: CPU of the measuring process in the timed loop (start-up excluded); theirs: one process per handshake, launcher subtracted.');

  console.log(`\n(b) ${FLOOD_PER_PEER * 2} measurements at once against flooding peers (endless line; endless multi-line greeting)\n`);
  console.log(`  RSS before: ${fixed(flooded.baselineRssKiB / 1024, 1)} MiB   peak: ${fixed(flooded.maxRssKiB / 1024, 1)} MiB   slowest: ${fixed(flooded.slowestMs, 0)} ms`);
  console.log(`  statuses: ${tallyText(flooded.statuses)}   findings: ${tallyText(flooded.findings)}`);

  const sorted = [...deadline.overshootMs].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] ?? NaN;
  const [min, max] = [sorted[0] ?? NaN, sorted.at(-1) ?? NaN];
  console.log(`\n(c) ${DEADLINE_RUNS} measurements with a ${DEADLINE_MS} ms deadline against a one-byte-a-second tarpit\n`);
  console.log(`  past the deadline: min ${fixed(min, 1)} ms, median ${fixed(median, 1)} ms, max ${fixed(max, 1)} ms   statuses: ${tallyText(deadline.statuses)}`);

  const finger = (concurrency: number): Row | undefined => rows.find((row) => row.tool === 'posttls-finger' && row.concurrency === concurrency);
  const cpuTargets = CONCURRENCIES.map((concurrency) => {
    const mine = ours(concurrency);
    const theirs = finger(concurrency);
    const value = mine && theirs ? mine.cpuMs / theirs.cpuMs : NaN;
    return [`CPU per measurement / posttls-finger's, concurrency ${concurrency}`, fixed(value, 3), `<= ${fixed(TARGET_CPU_RATIO, 3)}`, value <= TARGET_CPU_RATIO ? 'met' : 'NOT met'];
  });
  const peakMiB = flooded.maxRssKiB / 1024;
  console.log('\ntargets\n');
  console.log(
    table(
      ['figure', 'value', 'target', ''],
      [
        ...cpuTargets,
        [`peak RSS, ${FLOOD_PER_PEER * 2} concurrent measurements, flooding peers`, `${fixed(peakMiB, 1)} MiB`, `< ${TARGET_RSS_MIB} MiB`, peakMiB < TARGET_RSS_MIB ? 'met' : 'NOT met'],
        ['deadline overshoot, worst of the runs', `${fixed(max, 1)} ms`, `< ${TARGET_OVERSHOOT_MS} ms`, max < TARGET_OVERSHOOT_MS ? 'met' : 'NOT met'],
      ],
    ),
  );
}

async function main(): Promise<void> {
  const started = performance.now();
  console.log(`smtp-probe bench: node ${process.version}, ${availableParallelism()} CPUs, load average ${loadavg().map((load) => fixed(load, 2)).join(' ')} (a shared machine makes figures noisy)`);
  const postfix = await startPostfix();
  if (!postfix) {
    console.error('the benchmark needs Postfix (Debian: apt-get install postfix) and root');
    process.exitCode = 1;
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-bench-'));
  const peers: ScriptedPeer[] = [];
  try {
    const runner = await buildRunner(dir);
    const rows = await handshakeRows(runner, postfix);
    const flooded = await floodRss(runner, peers);
    const deadline = await overshoot(runner, peers);
    report(rows, flooded, deadline);
    console.log(`\nbench took ${fixed((performance.now() - started) / 1000, 0)} s`);
  } finally {
    await Promise.all(peers.map((peer) => peer.close()));
    await postfix.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
