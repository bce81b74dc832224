// A private Postfix (Debian `postfix`) on loopback for integration tests and benchmarks.
//
// Everything lives in one temporary folder: config/ (main.cf, master.cf, an access table),
// queue/, data/ and the log. The system instance (/etc/postfix, /var/spool/postfix) is never
// touched: /etc/postfix is only read as Postfix's meta_directory (the list of queue folders to
// create). The master daemon runs in the foreground as our child, in its own process group, so
// stop() ends it and every smtpd it started. One instance offers four smtpd services, each on
// a 127.0.0.1 port picked at start, made with master.cf `-o` overrides:
//
//   starttls         STARTTLS offered (smtpd_tls_security_level=may)
//   plain            no TLS at all
//   implicitTls      TLS from the first byte (smtpd_tls_wrappermode=yes, RFC 8314)
//   rejectAtConnect  the client is rejected at connect with a blocklist-style reply
//                    (smtpd_delay_reject=no + a cidr access table matching 127.0.0.0/8)
//
// Postfix never looks anything up in DNS here: no peer name lookup (smtpd_peername_lookup=no),
// no DNS in its SMTP client, myhostname fixed to mx.test, nothing delivered anywhere.
//
// Without Postfix (or without root, which the master daemon needs) startPostfix() prints a
// loud skip notice and returns null, except in CI (CI=true), where .ci/run installed it and
// nothing may skip: there it throws.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, readSync, closeSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { testCerts } from './certs';
import { freeLoopbackPorts } from './ports';
import { realPartMissing } from './skip';

export const POSTFIX_HOST = '127.0.0.1';
/** Postfix's myhostname, the name in its certificate (test/helpers/certs.ts) and the SNI to send. */
export const POSTFIX_HOSTNAME = 'mx.test';
/** The text the rejectAtConnect service puts in its 554 greeting, shaped like a DNSBL rejection. */
export const BLOCKLIST_REJECT_TEXT = 'Service unavailable; client [127.0.0.1] blocked using bl.test';

export interface PostfixPorts {
  starttls: number;
  plain: number;
  implicitTls: number;
  rejectAtConnect: number;
}

export interface PostfixInstance {
  host: typeof POSTFIX_HOST;
  ports: PostfixPorts;
  /** the temporary folder holding config, queue, data and log */
  dir: string;
  /** the end of Postfix's log, to explain a failing test */
  logTail(): string;
  /** stops the master and all its processes and removes the folder; safe to call twice */
  stop(): Promise<void>;
}

const SERVICES = ['starttls', 'plain', 'implicitTls', 'rejectAtConnect'] as const;
const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const COMMAND_TIMEOUT_MS = 30_000;
const START_ATTEMPTS = 3;
const LOG_TAIL_BYTES = 8 * 1024;
/** smtpd processes per service: the benchmark runs 50 measurements at once */
const MAX_SMTPD_PER_SERVICE = 100;

interface PostfixPrograms {
  postfix: string;
  master: string;
}

class PortTakenError extends Error {}

function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  return dirs.filter((dir) => dir.length > 0).map((dir) => join(dir, name)).find((file) => existsSync(file));
}

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: COMMAND_TIMEOUT_MS, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')} failed: ${error.message} ${stderr}`.trim()));
      else resolve(stdout);
    });
  });
}

/** The Postfix programs, or why Postfix cannot run here. */
async function findPostfix(): Promise<PostfixPrograms | string> {
  const postconf = findProgram('postconf');
  if (!postconf) return 'postconf not found: Postfix is not installed (Debian: apt-get install postfix)';
  const [daemonDir, commandDir] = (await run(postconf, ['-dh', 'daemon_directory', 'command_directory'])).trim().split('\n');
  const master = join(daemonDir ?? '', 'master');
  const postfix = join(commandDir ?? '', 'postfix');
  if (!existsSync(master) || !existsSync(postfix)) return `Postfix programs not found (${master}, ${postfix})`;
  if (process.getuid?.() !== 0) return 'the Postfix master daemon must run as root';
  return { postfix, master };
}

function unavailable(reason: string): null {
  realPartMissing('Postfix', `${reason}. Install postfix and run as root (as .ci/run does) to run them.`);
  return null;
}

function mainCf(dir: string): string {
  const { valid } = testCerts();
  return [
    'compatibility_level = 3.6',
    `queue_directory = ${join(dir, 'queue')}`,
    `data_directory = ${join(dir, 'data')}`,
    // Read only: the list of queue folders `postfix check` creates.
    'meta_directory = /etc/postfix',
    `maillog_file = ${join(dir, 'maillog')}`,
    `maillog_file_prefixes = ${dir}`,
    `myhostname = ${POSTFIX_HOSTNAME}`,
    'mydomain = test',
    'myorigin = $myhostname',
    'mydestination =',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    'smtpd_banner = $myhostname ESMTP Postfix',
    // No lookup may leave the machine: no reverse lookup of clients, no DNS in the SMTP
    // client, and nothing is ever delivered.
    'smtpd_peername_lookup = no',
    'smtp_dns_support_level = disabled',
    'smtp_host_lookup = native',
    'default_transport = error',
    'relay_transport = error',
    'alias_maps =',
    'alias_database =',
    'biff = no',
    // The benchmark opens 50 connections at once from one address.
    'smtpd_client_connection_count_limit = 0',
    `default_process_limit = ${MAX_SMTPD_PER_SERVICE}`,
    `smtpd_tls_cert_file = ${valid.certFile}`,
    `smtpd_tls_key_file = ${valid.keyFile}`,
    'smtpd_tls_security_level = none',
    '',
  ].join('\n');
}

function masterCf(dir: string, ports: PostfixPorts): string {
  const smtpd = (port: number, overrides: string[]): string =>
    [`${POSTFIX_HOST}:${port} inet n - n - ${MAX_SMTPD_PER_SERVICE} smtpd`, ...overrides.map((override) => `  -o ${override}`)].join('\n');
  return [
    smtpd(ports.starttls, ['smtpd_tls_security_level=may']),
    smtpd(ports.plain, ['smtpd_tls_security_level=none']),
    // RFC 8314 implicit TLS; Postfix wants "encrypt" with wrapper mode.
    smtpd(ports.implicitTls, ['smtpd_tls_wrappermode=yes', 'smtpd_tls_security_level=encrypt']),
    // Client restrictions at connect time (smtpd_delay_reject=no) turn the greeting into the
    // access table's 554.
    smtpd(ports.rejectAtConnect, ['smtpd_delay_reject=no', `smtpd_client_restrictions=check_client_access,cidr:${join(dir, 'config', 'blocked.cidr')}`]),
    'postlog   unix-dgram n - n - 1 postlogd',
    'anvil     unix - - n - 1 anvil',
    'tlsmgr    unix - - n 1000? 1 tlsmgr',
    'proxymap  unix - - n - - proxymap',
    'rewrite   unix - - n - - trivial-rewrite',
    '',
  ].join('\n');
}

function readTail(file: string): string {
  if (!existsSync(file)) return '';
  const size = statSync(file).size;
  const length = Math.min(size, LOG_TAIL_BYTES);
  const buffer = Buffer.alloc(length);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buffer, 0, length, size - length);
  } finally {
    closeSync(fd);
  }
  return buffer.toString('utf8');
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: POSTFIX_HOST, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const sleep = (millis: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, millis));

function signalGroup(master: ChildProcess, signal: NodeJS.Signals): void {
  if (master.pid === undefined) return;
  try {
    process.kill(-master.pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

async function waitUntilListening(master: ChildProcess, ports: PostfixPorts, log: string): Promise<void> {
  const started = Date.now();
  for (;;) {
    if (master.exitCode !== null || master.signalCode !== null) {
      const tail = readTail(log);
      if (tail.includes('Address already in use')) throw new PortTakenError(tail);
      throw new Error(`Postfix master exited during startup (${master.exitCode ?? master.signalCode}):\n${tail}`);
    }
    const listening = await Promise.all(SERVICES.map((service) => accepts(ports[service])));
    if (listening.every(Boolean)) return;
    if (Date.now() - started > STARTUP_TIMEOUT_MS) throw new Error(`Postfix did not listen within ${STARTUP_TIMEOUT_MS} ms:\n${readTail(log)}`);
    await sleep(50);
  }
}

async function startOnce(programs: PostfixPrograms): Promise<PostfixInstance> {
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-postfix-'));
  // Postfix daemons drop to the postfix user and must reach queue/ and data/ below.
  chmodSync(dir, 0o755);
  const configDir = join(dir, 'config');
  const log = join(dir, 'maillog');
  for (const sub of ['config', 'queue']) mkdirSync(join(dir, sub));
  const [starttls, plain, implicitTls, rejectAtConnect] = await freeLoopbackPorts(SERVICES.length);
  const ports: PostfixPorts = { starttls: starttls!, plain: plain!, implicitTls: implicitTls!, rejectAtConnect: rejectAtConnect! };
  writeFileSync(join(configDir, 'main.cf'), mainCf(dir));
  writeFileSync(join(configDir, 'master.cf'), masterCf(dir, ports));
  writeFileSync(join(configDir, 'blocked.cidr'), `127.0.0.0/8 554 5.7.1 ${BLOCKLIST_REJECT_TEXT}\n`);

  const removeDir = (): void => rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
  // `postfix check` creates the queue folders with their owners and modes (post-install).
  try {
    await run(programs.postfix, ['-c', configDir, 'check']);
  } catch (error) {
    const tail = readTail(log);
    removeDir();
    throw new Error(`${(error as Error).message}\n${tail}`);
  }

  // -d: stay in the foreground as our child. detached: its own process group, which the master
  // signals on SIGTERM (it kills its whole group, so it must not share ours).
  const master = spawn(programs.master, ['-c', configDir, '-d'], { detached: true, stdio: 'ignore' });
  master.unref();
  const exited = new Promise<void>((resolve) => master.once('exit', () => resolve()));
  // A test process that dies without stop() still takes its Postfix with it.
  const killOnExit = (): void => {
    signalGroup(master, 'SIGKILL');
    removeDir();
  };
  process.once('exit', killOnExit);

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', killOnExit);
    if (master.exitCode === null && master.signalCode === null) {
      master.kill('SIGTERM');
      await Promise.race([exited, sleep(STOP_TIMEOUT_MS)]);
    }
    // Whatever survived the master (a child busy in a system call) goes too.
    signalGroup(master, 'SIGKILL');
    removeDir();
  };

  try {
    await waitUntilListening(master, ports, log);
  } catch (error) {
    await stop();
    throw error;
  }
  return { host: POSTFIX_HOST, ports, dir, logTail: () => readTail(log), stop };
}

/** Starts a private Postfix on loopback; null (with a loud notice) when it cannot run here. */
export async function startPostfix(): Promise<PostfixInstance | null> {
  const programs = await findPostfix();
  if (typeof programs === 'string') return unavailable(programs);
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startOnce(programs);
    } catch (error) {
      // Another process took one of the picked ports before Postfix bound it: pick again.
      if (!(error instanceof PortTakenError) || attempt === START_ATTEMPTS) throw error;
    }
  }
}
