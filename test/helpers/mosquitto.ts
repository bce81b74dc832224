// A real Mosquitto for integration tests (Debian `mosquitto`, which .ci/run installs), on a
// free 127.0.0.1 port, configured from scripts/mosquitto/mosquitto.conf.template with the
// fleet ACL scripts/mosquitto/acl: TLS with client certificates this helper makes (CN = probe
// id or controller name), `require_certificate`, `use_identity_as_username` and
// `use_username_as_clientid`. Without Mosquitto the tests skip loudly; on CI they fail.
// Also a fake probe speaking the MQTT contract, for controller and broker tests, and the real
// agent as a child process.

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { type Ack, type ProbeStatus, type PublishedResult, type ResultAck, topics } from '../../firmware/agent/protocol';
import { type FleetCerts, makeFleetCerts } from '../../scripts/mosquitto/certs';
import { buildBundle } from './bundle';
import { freeLoopbackPorts } from './ports';
import { realPartMissing } from './skip';
import { slowdown, spawnNode } from './node-command';

export const MOSQUITTO = '/usr/sbin/mosquitto';
const SHIPPED = join(__dirname, '..', '..', 'scripts', 'mosquitto');
const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const PORT_ATTEMPTS = 5;
const LOG_LIMIT = 256 * 1024;

/**
 * Why Mosquitto tests cannot run here, or undefined when they can. With CI=true a missing
 * Mosquitto is an error, not a skip: CI installs it, so its absence is a broken setup.
 */
export function mosquittoSkipReason(): string | undefined {
  if (existsSync(MOSQUITTO)) return undefined;
  return realPartMissing('Mosquitto', `${MOSQUITTO} is not installed (Debian: apt-get install mosquitto)`);
}

export interface TlsClientFiles {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface Mosquitto {
  url: string;
  port: number;
  certs: FleetCerts;
  /** ca, cert and key for mqtt.js, for one of the identities the certificates were made for */
  tls(identity: string): TlsClientFiles;
  /** what Mosquitto logged so far, for failure messages */
  log(): string;
  stop(): Promise<void>;
}

function render(template: string, values: Record<string, string>): string {
  return template.replace(/\{\{(\w+)\}\}/g, (_match, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`no value for {{${name}}} in the Mosquitto template`);
    return value;
  });
}

/** Resolves when Mosquitto says it is running; rejects with its log if it exits first. */
function whenRunning(child: ChildProcess, log: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`mosquitto not running after ${READY_TIMEOUT_MS} ms:\n${log()}`)), READY_TIMEOUT_MS);
    const onData = (): void => {
      if (/mosquitto version \S+ running/.test(log())) finish();
    };
    const onExit = (code: number | null): void => finish(new Error(`mosquitto exited with ${code}:\n${log()}`));
    const finish = (error?: Error): void => {
      clearTimeout(timer);
      child.stderr?.removeListener('data', onData);
      child.removeListener('exit', onExit);
      if (error) reject(error);
      else resolve();
    };
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Starts Mosquitto with certificates for `identities` (probe ids and controller names). */
export async function startMosquitto(identities: string[], options: { aclFile?: string } = {}): Promise<Mosquitto> {
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-mosquitto-'));
  try {
    const certs = makeFleetCerts(dir, identities);
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir);
    const template = readFileSync(join(SHIPPED, 'mosquitto.conf.template'), 'utf8');
    for (let attempt = 1; ; attempt += 1) {
      const [port] = await freeLoopbackPorts(1);
      const confFile = join(dir, 'mosquitto.conf');
      writeFileSync(
        confFile,
        render(template, {
          acl_file: options.aclFile ?? join(SHIPPED, 'acl'),
          data_dir: dataDir,
          // Run as the test's own user: as root Mosquitto would switch to `mosquitto`, which
          // cannot read the keys in this private temporary folder.
          user: userInfo().username,
          port: String(port),
          host: '127.0.0.1',
          cafile: certs.caFile,
          certfile: certs.server.certFile,
          keyfile: certs.server.keyFile,
        }),
      );
      const child = spawn(MOSQUITTO, ['-c', confFile], { stdio: ['ignore', 'ignore', 'pipe'] });
      let log = '';
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (text: string) => {
        if (log.length < LOG_LIMIT) log += text;
      });
      try {
        await whenRunning(child, () => log);
      } catch (error) {
        await stopChild(child);
        // Another process may take the port between our probe of it and Mosquitto's bind.
        if (attempt < PORT_ATTEMPTS && /Address already in use/.test(log)) continue;
        throw error;
      }
      return {
        url: `mqtts://127.0.0.1:${port}`,
        port,
        certs,
        tls: (identity) => {
          const files = certs.clients[identity];
          if (!files) throw new Error(`no client certificate for ${identity}`);
          return { ca: readFileSync(certs.caFile), cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) };
        },
        log: () => log,
        stop: async () => {
          await stopChild(child);
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Rejects with "timed out waiting for WHAT" unless `promise` settles within `ms`; `what` may be
 * a function, read at the timeout (e.g. to include a child's log as it is then).
 */
export function within<T>(promise: Promise<T>, what: string | (() => string), ms = 10_000 * slowdown()): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves once `condition()` holds (polled), or rejects like `within` after `ms`. */
export function until(condition: () => boolean, what: string | (() => string), ms = 10_000 * slowdown()): Promise<void> {
  let poll: NodeJS.Timeout | undefined;
  const met = new Promise<void>((resolve) => {
    const check = (): void => {
      if (!condition()) return;
      clearInterval(poll);
      resolve();
    };
    poll = setInterval(check, 10);
    check();
  });
  return within(met, what, ms).finally(() => clearInterval(poll));
}

export interface FakeProbeOptions {
  protocolVersion?: 4 | 5;
  tls?: TlsClientFiles;
  clientId?: string;
}

/**
 * A stand-in for the probe agent that speaks the MQTT contract (firmware/agent/protocol.ts):
 * retained status with a last will, requests in, acks and results out, result-acks in. For
 * controller and broker tests that must not depend on the agent's own behaviour.
 */
export class FakeProbe {
  readonly commands: Array<{ reqId: string; payload: unknown }> = [];
  readonly resultAcks: string[][] = [];

  private constructor(
    readonly id: string,
    readonly client: MqttClient,
  ) {}

  static async connect(url: string, id: string, options: FakeProbeOptions = {}): Promise<FakeProbe> {
    const offline: ProbeStatus = { probe_id: id, online: false, fw: 100, version: '0.1.0', boot_id: 'fake', timestamp: 0 };
    const client = mqtt.connect(url, {
      protocolVersion: options.protocolVersion ?? 4,
      clientId: options.clientId ?? id,
      reconnectPeriod: 0,
      will: { topic: topics.status(id), payload: Buffer.from(JSON.stringify(offline)), qos: 1, retain: true },
      ...(options.tls ?? {}),
    });
    client.on('error', () => undefined);
    await within(new Promise<void>((resolve) => client.once('connect', () => resolve())), `${id} connect`);
    const probe = new FakeProbe(id, client);
    client.on('message', (topic, payload) => {
      if (topic === topics.resultAck(id)) probe.resultAcks.push((JSON.parse(payload.toString()) as ResultAck).result_ids);
      else probe.commands.push({ reqId: topic.split('/').pop() as string, payload: JSON.parse(payload.toString()) });
    });
    await client.subscribeAsync({ [topics.cmdFilter(id)]: { qos: 1 }, [topics.resultAck(id)]: { qos: 1 } });
    await client.publishAsync(topics.status(id), JSON.stringify({ ...offline, online: true }), { qos: 1, retain: true });
    return probe;
  }

  async publishRaw(reqId: string, payload: string): Promise<void> {
    await this.client.publishAsync(topics.result(this.id, reqId), payload, { qos: 1 });
  }

  publish(published: PublishedResult): Promise<void> {
    return this.publishRaw(published.req_id, JSON.stringify(published));
  }

  async ack(ack: Ack): Promise<void> {
    await this.client.publishAsync(topics.ack(this.id, ack.req_id), JSON.stringify(ack), { qos: 1 });
  }

  /** Resolves with the first command not yet taken, once there is one. */
  async nextCommand(): Promise<{ reqId: string; payload: unknown }> {
    await until(() => this.commands.length > 0, `a command at ${this.id}`);
    return this.commands.shift() as { reqId: string; payload: unknown };
  }

  /** Resolves with the acked ids of the first result-ack naming `resultId` (past or future). */
  async waitForResultAck(resultId: string): Promise<string[]> {
    const acked = (): string[] | undefined => this.resultAcks.find((ids) => ids.includes(resultId));
    await until(() => acked() !== undefined, `result-ack of ${resultId}`);
    return acked() as string[];
  }

  /** Ends the connection abruptly, so that the broker sends the last will. */
  drop(): void {
    this.client.stream.destroy();
    this.client.end(true);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

export interface AgentProcess {
  child: ChildProcess;
  /** the agent's JSON-lines log (stderr) so far */
  log(): string;
  /** `promise`, with the agent's log added to its rejection */
  explain<T>(promise: Promise<T>): Promise<T>;
  /** SIGTERM, then waits for the exit (SIGKILL after a grace period) */
  stop(): Promise<void>;
}

/**
 * Runs `smtp-probe agent ARGS` from the built bundle (what ships), with the Node the harness
 * names (test/helpers/node-command.ts). The caller passes --broker, --id, --data and the rest.
 */
export async function startAgentProcess(args: string[]): Promise<AgentProcess> {
  const bundle = await buildBundle();
  const child = spawnNode([bundle, 'agent', ...args]);
  child.stdout.resume();
  let log = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    if (log.length < LOG_LIMIT) log += text;
  });
  return {
    child,
    log: () => log,
    explain: (promise) =>
      promise.catch((error: Error) => {
        throw new Error(`${error.message}\nagent log:\n${log}`);
      }),
    stop: () => stopChild(child),
  };
}

/** True when the agent's outbox in `dataDir` holds no results (all acknowledged). */
export function outboxEmpty(dataDir: string): boolean {
  let names: string[];
  try {
    names = readdirSync(join(dataDir, 'outbox'));
  } catch {
    return false;
  }
  return !names.some((name) => name.endsWith('.json') && name !== 'state.json');
}
