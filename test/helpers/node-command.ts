// The command that starts a Node process, for tests that run the bundle (or any script) as a
// child. Natively that is this process's own Node. Under ARM emulation (npm run test:arm) it is
// the qemu line, given by the harness in SMTP_PROBE_NODE, e.g.
//   SMTP_PROBE_NODE="qemu-arm-static -L .cache/arm/armhf .cache/arm/armhf/usr/bin/node"
// because the host kernel cannot execute the ARM Node binary that process.execPath names there.
// Words are separated by whitespace: the paths in it must not contain any.
//
// The harness also says how much slower that Node is than a native one (SMTP_PROBE_SLOWDOWN,
// e.g. 10 under qemu-user), so that functional deadlines in tests (a measurement that must end
// by its deadline plus a margin, a phase timeout a peer must not outlast) can be scaled by it
// rather than fail for want of CPU. They stay functional bounds, never performance targets.

import { type ChildProcessWithoutNullStreams, type SpawnOptionsWithoutStdio, spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';

export const NODE_COMMAND_VARIABLE = 'SMTP_PROBE_NODE';
export const SLOWDOWN_VARIABLE = 'SMTP_PROBE_SLOWDOWN';

export interface NodeCommand {
  file: string;
  /** arguments that come before the script and its own arguments */
  args: string[];
}

export function nodeCommand(): NodeCommand {
  const configured = process.env[NODE_COMMAND_VARIABLE]?.trim();
  if (!configured) return { file: process.execPath, args: [] };
  const [file, ...args] = configured.split(/\s+/) as [string, ...string[]];
  return { file, args };
}

/** Spawns Node with `args` (Node flags, then the script and its arguments), all three stdio piped. */
export function spawnNode(args: readonly string[], options: Omit<SpawnOptionsWithoutStdio, 'stdio'> = {}): ChildProcessWithoutNullStreams {
  const command = nodeCommand();
  return spawn(command.file, [...command.args, ...args], options);
}

/** How many times slower than native the Node under test runs (1 natively); a positive number. */
export function slowdown(): number {
  const configured = Number(process.env[SLOWDOWN_VARIABLE] ?? '1');
  return Number.isFinite(configured) && configured >= 1 ? configured : 1;
}

export interface ChildOutput {
  code: number | null;
  stdout: string;
  stderr: string;
  /** from this call (right after the spawn) to the end */
  ms: number;
}

/** Collects a child's stdout and stderr until it ends; SIGKILL once `limitMs` have passed. */
export function childOutput(child: ChildProcessWithoutNullStreams, limitMs: number): Promise<ChildOutput> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
  });
}
