// The `smtp-probe` command line: `measure` (one target or a list), `agent` (the probe's
// long-running MQTT agent). Bad usage prints a clear message and exits with status 2.

import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { runAgentCommand } from './agent/command';
import { measure } from './measure/driver';
import type { MeasureOptions } from './measure/options';
import { isHeloArgument, isHostName } from './names';
import { prettyResult } from './pretty';
import type { SmtpResult } from './result';
import { parseTarget } from './targets';
import { VERSION } from './version';

const USAGE = `smtp-probe ${VERSION}: SMTP measurements (STARTTLS, TLS, blocking) with Atlas-style JSON results

usage: smtp-probe <command> [options]

commands:
  measure   measure one mail server, or a list of them
  agent     run the probe agent: take measurement requests over MQTT, publish results
  help      this text

Run 'smtp-probe <command> --help' for a command's options.`;

const MEASURE_USAGE = `usage: smtp-probe measure TARGET [options]
       smtp-probe measure --targets FILE [--concurrency N] [options]

TARGET is an IP address, a host name, host:port, [IPv6]:port, or with --mx a mail domain.
Prints one JSON result (Atlas conventions) on stdout; with --targets, one JSON line per
target as each finishes (a progress bar goes to stderr when it is a terminal).

options:
  --port N            TCP port (default 25; 465 with --implicit-tls)
  --af 4|6            address family for names (default 4)
  --mx                TARGET is a mail domain: measure its best MX (the MX set is recorded)
  --implicit-tls      TLS from the first byte (port 465 style, RFC 8314)
  --no-starttls       never send STARTTLS (plaintext EHLO and QUIT only)
  --sni NAME          TLS server name, and the name the certificate is checked against
  --helo NAME         EHLO/HELO argument (default: our address literal, e.g. [192.0.2.7])
  --timeout MS        deadline of the whole measurement (default 30000)
  --resolver H:P      DNS server to use, e.g. 127.0.0.1:5353 or [::1]:53
  --ca FILE           extra trusted CA certificates (PEM) for certificate validation
  --allow-private     allow loopback, private, link-local and other non-public targets
  --transcript        include the conversation, line by line, in the result
  --pretty            a readable summary instead of JSON
  --targets FILE      measure every target in FILE (one a line; blank lines and # comments skipped)
  --concurrency N     measurements at once with --targets (default 10, at most 500)
  -h, --help          this text

exit status: 0 measured (single target: status ok), 1 single target not ok, 2 bad usage`;

class UsageError extends Error {}

function integer(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, not '${text}'`);
  return Number(text);
}

interface MeasureCommand {
  base: Omit<MeasureOptions, 'target'>;
  target?: { host: string; port?: number };
  targetsFile?: string;
  concurrency: number;
  pretty: boolean;
}

function parseMeasure(argv: string[]): MeasureCommand | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        port: { type: 'string' },
        af: { type: 'string' },
        mx: { type: 'boolean' },
        'implicit-tls': { type: 'boolean' },
        'no-starttls': { type: 'boolean' },
        sni: { type: 'string' },
        helo: { type: 'string' },
        timeout: { type: 'string' },
        resolver: { type: 'string' },
        ca: { type: 'string' },
        'allow-private': { type: 'boolean' },
        transcript: { type: 'boolean' },
        pretty: { type: 'boolean' },
        targets: { type: 'string' },
        concurrency: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  if (values['implicit-tls'] && values['no-starttls']) throw new UsageError('--implicit-tls and --no-starttls cannot be combined');
  if (values.targets !== undefined && positionals.length > 0) throw new UsageError('give either TARGET or --targets FILE, not both');
  if (values.targets === undefined && positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'missing TARGET' : `one TARGET only, got ${positionals.length}`);
  const af = values.af === undefined ? undefined : values.af === '4' ? 4 : values.af === '6' ? 6 : undefined;
  if (values.af !== undefined && af === undefined) throw new UsageError(`--af must be 4 or 6, not '${values.af}'`);
  if (values.resolver !== undefined && !/^(?:\[[0-9A-Fa-f:.]+\]|[0-9.]+)(?::\d{1,5})?$/.test(values.resolver)) {
    throw new UsageError(`--resolver must be an IP address with an optional port (127.0.0.1:5353, [::1]:53), not '${values.resolver}'`);
  }
  let ca: string[] | undefined;
  if (values.ca !== undefined) {
    try {
      ca = [readFileSync(values.ca, 'utf8')];
    } catch (error) {
      throw new UsageError(`cannot read --ca ${values.ca}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  if (values.helo !== undefined && !isHeloArgument(values.helo)) throw new UsageError(`--helo must be a host name or an address literal such as [192.0.2.7], not '${values.helo}'`);
  if (values.sni !== undefined && !isHostName(values.sni)) throw new UsageError(`--sni must be a host name, not '${values.sni}'`);
  const port = integer('port', values.port, 1, 65535);
  const timeoutMs = integer('timeout', values.timeout, 100, 600_000);
  const base: Omit<MeasureOptions, 'target'> = {
    mode: values['implicit-tls'] ? 'implicit-tls' : values['no-starttls'] ? 'plain' : 'starttls',
    mx: values.mx ?? false,
    allowPrivate: values['allow-private'] ?? false,
    transcript: values.transcript ?? false,
    ...(port !== undefined ? { port } : {}),
    ...(af !== undefined ? { af } : {}),
    ...(values.sni !== undefined ? { sni: values.sni } : {}),
    ...(values.helo !== undefined ? { helo: values.helo } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(values.resolver !== undefined ? { resolver: values.resolver } : {}),
    ...(ca ? { ca } : {}),
  };
  const command: MeasureCommand = { base, concurrency: integer('concurrency', values.concurrency, 1, 500) ?? 10, pretty: values.pretty ?? false };
  if (values.targets !== undefined) {
    command.targetsFile = values.targets;
    return command;
  }
  const target = parseTarget(positionals[0] as string);
  if ('error' in target) throw new UsageError(`bad TARGET '${positionals[0]}': ${target.error}`);
  command.target = target;
  return command;
}

function output(result: SmtpResult, pretty: boolean): string {
  return pretty ? prettyResult(result) + '\n' : JSON.stringify(result) + '\n';
}

/** A one-line progress bar on stderr, redrawn in place; only when stderr is a terminal. */
class Progress {
  private done = 0;
  private ok = 0;
  private started = 0;
  private readonly enabled = process.stderr.isTTY === true;

  start(): void {
    this.started++;
    this.draw();
  }

  finish(status: string): void {
    this.done++;
    if (status === 'ok') this.ok++;
    this.draw();
  }

  end(): void {
    if (this.enabled) process.stderr.write('\n');
  }

  private draw(): void {
    if (!this.enabled) return;
    const width = 30;
    const fill = this.started === 0 ? 0 : Math.round((this.done / this.started) * width);
    process.stderr.write(`\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${this.done}/${this.started} done, ${this.ok} ok, ${this.done - this.ok} not ok `);
  }
}

/** Measures every target of a file with at most `concurrency` at once, reading lines lazily. */
async function measureList(command: MeasureCommand): Promise<number> {
  const file = command.targetsFile as string;
  const input = createReadStream(file, { encoding: 'utf8' });
  const opened = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    input.once('open', () => resolve(undefined));
    input.once('error', (error: NodeJS.ErrnoException) => resolve(error));
  });
  if (opened) throw new UsageError(`cannot read --targets ${file}: ${opened.code ?? 'error'}`);
  const lines = createInterface({ input, crlfDelay: Infinity });
  const progress = new Progress();
  const running = new Set<Promise<void>>();
  let lineNumber = 0;
  for await (const raw of lines) {
    lineNumber++;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const target = parseTarget(line);
    if ('error' in target) {
      process.stderr.write(`${file}:${lineNumber}: skipped '${line.slice(0, 80)}': ${target.error}\n`);
      continue;
    }
    progress.start();
    const task = measure({ ...command.base, target: target.host, ...(target.port !== undefined ? { port: target.port } : {}) }).then((result) => {
      process.stdout.write(output(result, command.pretty));
      progress.finish(result.status);
    });
    const tracked: Promise<void> = task.finally(() => running.delete(tracked));
    running.add(tracked);
    if (running.size >= command.concurrency) await Promise.race(running);
  }
  await Promise.all(running);
  progress.end();
  return 0;
}

async function runMeasure(argv: string[]): Promise<number> {
  const command = parseMeasure(argv);
  if (command === 'help') {
    process.stdout.write(MEASURE_USAGE + '\n');
    return 0;
  }
  if (command.targetsFile !== undefined) return measureList(command);
  const target = command.target as { host: string; port?: number };
  const result = await measure({ ...command.base, target: target.host, ...(target.port !== undefined ? { port: target.port } : {}) });
  process.stdout.write(output(result, command.pretty));
  return result.status === 'ok' ? 0 : 1;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'measure':
        return await runMeasure(rest);
      case 'agent':
        return await runAgentCommand(rest);
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE + '\n');
        return 0;
      case '--version':
        process.stdout.write(VERSION + '\n');
        return 0;
      default:
        throw new UsageError(command === undefined ? 'missing command' : `unknown command '${command}'`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`smtp-probe: ${error.message}\n${command === 'measure' ? "Run 'smtp-probe measure --help'." : USAGE}\n`);
      return 2;
    }
    throw error;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`smtp-probe: internal error: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
      process.exitCode = 70;
    },
  );
}
