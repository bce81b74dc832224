// `npm run test:arm`: proves the firmware on the probes' runtime, Debian's Node 18 on armhf and
// arm64, emulated by qemu-user on this x86-64 machine.
//
// 1. Prepares the ARM sysroots (scripts/arm/sysroot.ts; cached in .cache/arm/).
// 2. Compiles every test/unit and test/integration test file to plain JavaScript
//    (scripts/arm/compile-tests.ts) and runs each in-process on the ARM Node: `node FILE.js`
//    runs its node:test tests. (`node --test` cannot work there: it starts each file through
//    process.execPath, an ARM binary the host kernel cannot execute.)
// 3. Runs the end-to-end tests of test/arm/ on this machine's Node with SMTP_PROBE_NODE set to
//    the qemu line (test/helpers/node-command.ts), so the built bundle runs on the ARM Node:
//    measuring a real Postfix and scripted adversarial peers, and the agent round trip.
//
// Everything talks to loopback only. Tests that start Node themselves must use the
// node-command helper; Postfix, openssl, dnsmasq, mosquitto and python3 are host programs,
// which qemu-user lets the emulated Node start natively.
//
// Usage: npx tsx scripts/test-arm.ts [armhf] [arm64] [--jobs N] [--filter TEXT]
// Prints a table per file and a final "N passed, N failed" line; exits 1 on any failure.

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { type ArmArch, parseArches } from './arm/arch';
import { compileTests } from './arm/compile-tests';
import { ARM_CACHE, armNodeCommand, prepareSysroot, sysrootNodeVersion } from './arm/sysroot';
import { NODE_COMMAND_VARIABLE, SLOWDOWN_VARIABLE } from '../test/helpers/node-command';

const ROOT = join(__dirname, '..');
const COMPILED = join(ARM_CACHE, 'compiled');
const LOGS = join(ARM_CACHE, 'logs');
/** Seconds each file took last time, so the longest start first and the run ends sooner. */
const DURATIONS = join(ARM_CACHE, 'durations.json');
const SUITE_DIRS = ['test/unit', 'test/integration'];
const END_TO_END_DIR = 'test/arm';
/**
 * A file that runs longer than this under emulation, or prints nothing for IDLE_TIMEOUT_MS (a
 * test that left a server or timer open never exits), is stopped and counted as failed.
 */
const FILE_TIMEOUT_MS = 15 * 60_000;
const IDLE_TIMEOUT_MS = 2 * 60_000;
const FAILURE_LINES = 60;
/** How much slower the emulated Node is, for tests that scale functional deadlines by it. */
const EMULATION_SLOWDOWN = 10;

interface Job {
  arch: ArmArch;
  /** what the summary calls it: the source file, relative to the repository */
  name: string;
  /** the emulated Node running a compiled file, or this machine's Node running an end-to-end file */
  command: string[];
}

interface Outcome {
  job: Job;
  passed: number;
  failed: number;
  skipped: number;
  seconds: number;
  exit: string;
  log: string;
}

function testFiles(dir: string): string[] {
  const full = join(ROOT, dir);
  if (!existsSync(full)) return [];
  return readdirSync(full)
    .filter((file) => file.endsWith('.test.ts'))
    .sort()
    .map((file) => join(full, file));
}

function esbuildBinary(): string {
  const binary = join(ROOT, 'node_modules', '@esbuild', `${process.platform}-${process.arch}`, 'bin', 'esbuild');
  if (!existsSync(binary)) throw new Error(`esbuild's native binary is not at ${binary}; run npm ci`);
  return binary;
}

/** The counts node:test prints at the end of its TAP output ("# pass 12"). */
function tapCount(output: string, name: string): number | undefined {
  const matches = [...output.matchAll(new RegExp(`^# ${name} (\\d+)$`, 'gm'))];
  const last = matches.at(-1);
  return last ? Number(last[1]) : undefined;
}

/** The failing tests' TAP blocks, so the summary says what broke without opening the log. */
function failureExcerpt(output: string): string {
  const lines = output.split('\n');
  const excerpt: string[] = [];
  lines.forEach((line, index) => {
    if (!/^\s*not ok /.test(line)) return;
    const indent = /^\s*/.exec(line)?.[0].length ?? 0;
    excerpt.push(line);
    for (let next = index + 1; next < lines.length; next++) {
      const following = lines[next] as string;
      const followingIndent = /^\s*/.exec(following)?.[0].length ?? 0;
      if (following.trim() !== '' && followingIndent <= indent) break;
      excerpt.push(following);
    }
  });
  const chosen = excerpt.length > 0 ? excerpt : lines.slice(-FAILURE_LINES);
  return chosen.slice(0, FAILURE_LINES).join('\n');
}

const durationKey = (job: Job): string => `${job.arch} ${job.name}`;

function readDurations(): Record<string, number> {
  try {
    return JSON.parse(readFileSync(DURATIONS, 'utf8')) as Record<string, number>;
  } catch {
    return {};
  }
}

function logFile(job: Job): string {
  return join(LOGS, job.arch, `${job.name.replace(/[/\\]/g, '_')}.tap`);
}

function runJob(job: Job, env: NodeJS.ProcessEnv): Promise<Outcome> {
  const logPath = logFile(job);
  mkdirSync(dirname(logPath), { recursive: true });
  const log = createWriteStream(logPath);
  const started = Date.now();
  return new Promise((resolve) => {
    const [file, ...args] = job.command as [string, ...string[]];
    // Its own process group, so a timeout stops the test and everything it started.
    const child: ChildProcess = spawn(file, args, { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let stoppedBecause: string | undefined;
    const stop = (why: string): void => {
      stoppedBecause = why;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // ESRCH: it ended on its own meanwhile.
      }
    };
    const timer = setTimeout(() => stop(`ran ${FILE_TIMEOUT_MS / 60_000} min`), FILE_TIMEOUT_MS);
    let idle = setTimeout(() => stop(`silent ${IDLE_TIMEOUT_MS / 60_000} min`), IDLE_TIMEOUT_MS);
    const collect = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
      log.write(chunk);
      clearTimeout(idle);
      idle = setTimeout(() => stop(`silent ${IDLE_TIMEOUT_MS / 60_000} min`), IDLE_TIMEOUT_MS);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.on('error', (error) => collect(Buffer.from(`\nspawn failed: ${error.message}\n`)));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(idle);
      log.end();
      const exit = stoppedBecause ? `stopped: ${stoppedBecause}` : signal ? signal : String(code);
      const passed = tapCount(output, 'pass') ?? 0;
      const skipped = (tapCount(output, 'skipped') ?? 0) + (tapCount(output, 'todo') ?? 0);
      const reported = tapCount(output, 'fail');
      let failed: number;
      if (reported === undefined) {
        // No summary: the file crashed, hung or was stopped; its top-level failures, at least one.
        failed = Math.max(1, output.match(/^not ok /gm)?.length ?? 0);
      } else {
        failed = reported + (tapCount(output, 'cancelled') ?? 0);
        // Exited non-zero with nothing failed (e.g. an error after the tests): one failure.
        if (exit !== '0' && failed === 0) failed = 1;
      }
      resolve({ job, passed, failed, skipped, seconds: (Date.now() - started) / 1000, exit, log: output });
    });
  });
}

/** Runs the jobs `jobs` at a time, in order of the list, reporting each as it finishes. */
async function runAll(list: Job[], jobs: number, envFor: (job: Job) => NodeJS.ProcessEnv): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < list.length) {
      const job = list[next++] as Job;
      const outcome = await runJob(job, envFor(job));
      outcomes.push(outcome);
      const mark = outcome.failed > 0 ? 'FAIL' : 'ok  ';
      console.log(`${mark} ${job.arch.padEnd(5)} ${job.name.padEnd(44)} ${String(outcome.passed).padStart(4)} passed ${String(outcome.failed).padStart(3)} failed ${String(outcome.skipped).padStart(3)} skipped ${outcome.seconds.toFixed(0).padStart(5)} s`);
      if (outcome.failed > 0) console.log(failureExcerpt(outcome.log).replace(/^/gm, '      | '));
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, list.length) }, worker));
  return outcomes;
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { jobs: { type: 'string', default: '2' }, filter: { type: 'string' } },
  });
  const jobs = Number(values.jobs);
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 16) throw new Error(`--jobs must be 1..16, not '${values.jobs}'`);
  const arches = parseArches(positionals);
  const started = Date.now();

  for (const arch of arches) {
    const sysroot = prepareSysroot(arch);
    if (/\s/.test(sysroot)) throw new Error(`the sysroot path must not contain whitespace (${NODE_COMMAND_VARIABLE} is split on it): ${sysroot}`);
    console.log(`${arch}: Node ${sysrootNodeVersion(arch)} in ${relative(ROOT, sysroot)}`);
  }

  const matches = (file: string): boolean => values.filter === undefined || relative(ROOT, file).includes(values.filter);
  const suiteFiles = SUITE_DIRS.flatMap(testFiles).filter(matches);
  const endToEndFiles = testFiles(END_TO_END_DIR).filter(matches);
  rmSync(COMPILED, { recursive: true, force: true });
  rmSync(LOGS, { recursive: true, force: true });
  const compiled = await compileTests(ROOT, suiteFiles, COMPILED);
  console.log(`compiled ${compiled.length} test files to plain JavaScript in ${relative(ROOT, COMPILED)}`);

  const list: Job[] = [];
  for (const arch of arches) {
    suiteFiles.forEach((file, index) => {
      list.push({ arch, name: relative(ROOT, file), command: [...armNodeCommand(arch), '--enable-source-maps', compiled[index] as string] });
    });
    for (const file of endToEndFiles) {
      list.push({ arch, name: relative(ROOT, file), command: [process.execPath, '--import', 'tsx', '--test', '--test-reporter=tap', file] });
    }
  }

  // Longest first (files not seen before count as long): with few workers, a long file started
  // last would leave the others idle at the end.
  const durations = readDurations();
  const expected = (job: Job): number => durations[durationKey(job)] ?? Number.MAX_SAFE_INTEGER;
  list.sort((a, b) => Math.sign(expected(b) - expected(a)));

  const esbuild = esbuildBinary();
  const outcomes = await runAll(list, jobs, (job) => ({
    ...process.env,
    [NODE_COMMAND_VARIABLE]: armNodeCommand(job.arch).join(' '),
    [SLOWDOWN_VARIABLE]: String(EMULATION_SLOWDOWN),
    // The compiled tests drive esbuild's host binary (see scripts/arm/compile-tests.ts).
    ESBUILD_BINARY_PATH: esbuild,
  }));

  writeFileSync(DURATIONS, JSON.stringify({ ...durations, ...Object.fromEntries(outcomes.map((outcome) => [durationKey(outcome.job), Math.round(outcome.seconds)])) }, null, 2) + '\n');
  const counts = (some: Outcome[]): string => {
    const sum = (key: 'passed' | 'failed' | 'skipped'): number => some.reduce((acc, outcome) => acc + outcome[key], 0);
    return `${sum('passed')} passed, ${sum('failed')} failed, ${sum('skipped')} skipped`;
  };
  console.log('');
  for (const arch of arches) {
    const mine = outcomes.filter((outcome) => outcome.job.arch === arch);
    console.log(`${arch}: ${counts(mine)} in ${mine.length} files`);
  }
  const failedFiles = outcomes.filter((outcome) => outcome.failed > 0);
  for (const outcome of failedFiles) console.log(`failed: ${outcome.job.arch} ${outcome.job.name} (exit ${outcome.exit}; log ${relative(ROOT, logFile(outcome.job))})`);
  const minutes = ((Date.now() - started) / 60_000).toFixed(1);
  console.log(`test:arm ${arches.join('+')}: ${counts(outcomes)} (${minutes} min)`);
  return failedFiles.length > 0 || outcomes.length === 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(`test:arm: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  },
);
