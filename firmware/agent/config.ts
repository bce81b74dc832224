// The agent's configuration. One table of settings; each can come from a command-line flag
// (`--heap-limit-mb 64`), the environment (`SMTP_PROBE_HEAP_LIMIT_MB=64`) or a JSON file
// (`{"heap_limit_mb": 64}`, given with `--config FILE`), in that order of precedence, then the
// default. Unknown flags and keys, bad values and missing required settings are usage errors.

import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { createSecureContext } from 'node:tls';
import { validateRequestId } from './validate';

type Kind = 'string' | 'path' | 'int' | 'bool';

interface Setting {
  kind: Kind;
  help: string;
  /** what the value is called in the help text */
  arg?: string;
  min?: number;
  max?: number;
  default?: number | boolean;
  required?: boolean;
}

const SETTINGS = {
  broker: { kind: 'string', arg: 'URL', required: true, help: 'mqtt://HOST[:PORT] or mqtts://HOST[:PORT]' },
  id: { kind: 'string', arg: 'PROBE_ID', required: true, help: 'probe id: topic level, MQTT client id and username (certificate CN)' },
  data: { kind: 'path', arg: 'DIR', required: true, help: 'data folder: outbox and accepted requests' },
  ca: { kind: 'path', arg: 'FILE', help: 'mqtts: CA file (PEM); default the system roots' },
  cert: { kind: 'path', arg: 'FILE', help: 'mqtts: client certificate file (PEM)' },
  key: { kind: 'path', arg: 'FILE', help: 'mqtts: client key file (PEM)' },
  allow_private: { kind: 'bool', default: false, help: 'allow loopback, private and link-local targets' },
  resolver: { kind: 'string', arg: 'HOST:PORT', help: 'DNS server for measurements; default the system resolvers' },
  prb_id: { kind: 'int', min: 0, max: 0xffff_ffff, help: 'numeric probe id in results (Atlas prb_id)' },
  mqtt_version: { kind: 'int', min: 4, max: 5, default: 5, help: '5, or 4 for MQTT 3.1.1 brokers' },
  keepalive_s: { kind: 'int', min: 5, max: 3600, default: 60, help: 'MQTT keepalive' },
  session_expiry_s: { kind: 'int', min: 0, max: 0xffff_ffff, default: 86_400, help: 'MQTT 5 session expiry: how long commands wait for an offline probe' },
  connect_timeout_ms: { kind: 'int', min: 100, max: 120_000, default: 10_000, help: 'time for TCP, TLS and CONNACK' },
  reconnect_min_ms: { kind: 'int', min: 10, max: 600_000, default: 1000, help: 'first reconnect delay; doubles per failure, jittered' },
  reconnect_max_ms: { kind: 'int', min: 10, max: 3_600_000, default: 60_000, help: 'longest reconnect delay' },
  status_interval_s: { kind: 'int', min: 1, max: 86_400, default: 60, help: 'retained status refresh' },
  heap_limit_mb: { kind: 'int', min: 8, max: 4096, default: 64, help: 'heap budget: new work is refused near it (enforce with node --max-old-space-size)' },
  max_concurrent: { kind: 'int', min: 1, max: 500, default: 10, help: 'measurements at once' },
  max_one_offs: { kind: 'int', min: 1, max: 100_000, default: 100, help: 'one-off requests held' },
  max_periodic: { kind: 'int', min: 1, max: 10_000, default: 100, help: 'periodic requests held' },
  target_burst: { kind: 'int', min: 1, max: 100_000, default: 2, help: 'measurements per target in a burst' },
  target_refill_ms: { kind: 'int', min: 1, max: 86_400_000, default: 10_000, help: 'then one more per target every N ms' },
  min_interval_s: { kind: 'int', min: 1, max: 86_400, default: 60, help: 'shortest periodic interval accepted' },
  max_payload_bytes: { kind: 'int', min: 256, max: 65_536, default: 4096, help: 'largest command accepted' },
  cmd_burst: { kind: 'int', min: 1, max: 1_000_000, default: 50, help: 'commands accepted in a burst' },
  cmd_per_s: { kind: 'int', min: 1, max: 100_000, default: 10, help: 'then commands accepted per second' },
  outbox_max_bytes: { kind: 'int', min: 65_536, max: 2 ** 40, default: 32 * 1024 * 1024, help: 'outbox bound: beyond it the oldest results are dropped and counted' },
  outbox_max_entries: { kind: 'int', min: 1, max: 1_000_000, default: 20_000, help: 'outbox entry bound' },
  inflight_window: { kind: 'int', min: 1, max: 10_000, default: 20, help: 'results published and not yet acknowledged' },
  resend_ms: { kind: 'int', min: 100, max: 86_400_000, default: 30_000, help: 'publish a result again when not acknowledged by then' },
  shutdown_grace_ms: { kind: 'int', min: 0, max: 600_000, default: 5000, help: 'at SIGTERM, time running measurements get before they are interrupted' },
} satisfies Record<string, Setting>;

type Key = keyof typeof SETTINGS;
type Raw = Partial<Record<Key, string | number | boolean>>;

export interface BrokerEndpoint {
  secure: boolean;
  host: string;
  port: number;
}

export interface AgentConfig {
  probeId: string;
  broker: BrokerEndpoint;
  /** PEM contents, read at start */
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  dataDir: string;
  allowPrivate: boolean;
  resolver?: string;
  prbId?: number;
  mqttVersion: 4 | 5;
  keepaliveS: number;
  sessionExpiryS: number;
  connectTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  statusIntervalS: number;
  heapLimitBytes: number;
  maxConcurrent: number;
  maxOneOffs: number;
  maxPeriodic: number;
  targetBurst: number;
  targetRefillMs: number;
  minIntervalS: number;
  maxPayloadBytes: number;
  cmdBurst: number;
  cmdPerS: number;
  outboxMaxBytes: number;
  outboxMaxEntries: number;
  inflightWindow: number;
  resendMs: number;
  shutdownGraceMs: number;
}

export type ConfigOutcome = { kind: 'config'; config: AgentConfig } | { kind: 'help'; text: string } | { kind: 'error'; message: string };

class UsageError extends Error {}

function flagName(key: string): string {
  return `--${key.replace(/_/g, '-')}`;
}

function envName(key: string): string {
  return `SMTP_PROBE_${key.toUpperCase()}`;
}

const KEY_BY_FLAG = new Map<string, Key>(Object.keys(SETTINGS).map((key) => [flagName(key), key as Key]));

const FLAG_COLUMN = 26;

function agentUsage(): string {
  const lines = [
    'usage: smtp-probe agent --config FILE',
    '       smtp-probe agent --broker URL --id PROBE_ID --data DIR [--allow-private] [--ca FILE --cert FILE --key FILE] [options]',
    '',
    'Takes measurement requests over MQTT and publishes results until SIGINT or SIGTERM.',
    'Settings: flags, then SMTP_PROBE_<NAME> variables, then keys of the JSON config file.',
    '',
    `  ${'--config FILE'.padEnd(FLAG_COLUMN)}JSON file with the settings below as keys (${envName('config')})`,
  ];
  for (const [key, setting] of Object.entries(SETTINGS) as [Key, Setting][]) {
    const value = setting.kind === 'bool' ? '' : ` ${setting.arg ?? 'N'}`;
    const bounds = setting.kind === 'int' ? ` [${setting.min}..${setting.max}]` : '';
    const fallback = setting.default !== undefined ? ` (default ${String(setting.default)})` : setting.required ? ' (required)' : '';
    lines.push(`  ${`${flagName(key)}${value}`.padEnd(FLAG_COLUMN)}${setting.help}${bounds}${fallback}`);
  }
  return `${lines.join('\n')}\n`;
}

function parseFlags(argv: string[]): { raw: Raw; configFile?: string; help: boolean } {
  const raw: Raw = {};
  let configFile: string | undefined;
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const inline = eq > 0 ? arg.slice(eq + 1) : undefined;
    const takeValue = (): string => {
      if (inline !== undefined) return inline;
      const next = argv[++i];
      if (next === undefined) throw new UsageError(`${name} needs a value`);
      return next;
    };
    if (name === '--config') {
      configFile = takeValue();
      continue;
    }
    const key = KEY_BY_FLAG.get(name);
    if (!key) throw new UsageError(`unknown argument ${JSON.stringify(arg.slice(0, 64))}`);
    if (SETTINGS[key].kind === 'bool' && inline === undefined) raw[key] = true;
    else raw[key] = takeValue();
  }
  return { raw, configFile, help };
}

function readEnv(env: NodeJS.ProcessEnv): Raw {
  const raw: Raw = {};
  for (const key of Object.keys(SETTINGS) as Key[]) {
    const value = env[envName(key)];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  return raw;
}

function readConfigFile(path: string): Raw {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new UsageError(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError(`config file ${path} must hold a JSON object`);
  for (const key of Object.keys(value)) {
    if (!Object.prototype.hasOwnProperty.call(SETTINGS, key)) throw new UsageError(`config file ${path}: unknown key ${JSON.stringify(key.slice(0, 64))}`);
  }
  return value as Raw;
}

/** Converts one raw value (a string from flags or the environment, any JSON from the file). */
function convert(key: Key, raw: string | number | boolean): string | number | boolean {
  const setting: Setting = SETTINGS[key];
  const where = `${key} (${flagName(key)})`;
  switch (setting.kind) {
    case 'bool':
      if (raw === true || raw === 'true' || raw === '1') return true;
      if (raw === false || raw === 'false' || raw === '0') return false;
      throw new UsageError(`${where} must be true or false`);
    case 'int': {
      const value = typeof raw === 'string' && /^-?\d+$/.test(raw) ? Number(raw) : raw;
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < (setting.min as number) || value > (setting.max as number)) {
        throw new UsageError(`${where} must be an integer from ${setting.min} to ${setting.max}`);
      }
      return value;
    }
    default:
      if (typeof raw !== 'string' || raw === '') throw new UsageError(`${where} must be a non-empty string`);
      return raw;
  }
}

function parseBrokerUrl(text: string): BrokerEndpoint {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`broker URL ${JSON.stringify(text.slice(0, 128))} is not a URL`);
  }
  if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') throw new UsageError('broker URL must start with mqtt:// or mqtts://');
  if (url.username || url.password || (url.pathname !== '' && url.pathname !== '/') || url.search || url.hash) {
    throw new UsageError('broker URL takes only a host and a port');
  }
  const secure = url.protocol === 'mqtts:';
  // URL keeps the brackets of an IPv6 literal.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw new UsageError('broker URL needs a host');
  return { secure, host, port: url.port ? Number(url.port) : secure ? 8883 : 1883 };
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new UsageError(`cannot read ${what} file ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** Bad PEM or a key that does not match its certificate is a usage error now, not a failed connect later. */
function checkTlsMaterial(tls: AgentConfig['tls']): void {
  try {
    // A CA file without a certificate would be skipped silently by the TLS context.
    if (tls.ca) new X509Certificate(tls.ca);
    createSecureContext(tls);
  } catch (error) {
    throw new UsageError(`cannot use the TLS files: ${(error as Error).message}`);
  }
}

function checkResolver(text: string): void {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const host = match?.[1] ?? match?.[2] ?? '';
  if (!match || isIP(host) === 0 || Number(match[3]) < 1 || Number(match[3]) > 65_535) {
    throw new UsageError('resolver must be IP:PORT or [IPV6]:PORT');
  }
}

function resolveConfig(merged: Raw): AgentConfig {
  const values: Partial<Record<Key, string | number | boolean>> = {};
  for (const [key, setting] of Object.entries(SETTINGS) as [Key, Setting][]) {
    const raw = merged[key];
    if (raw !== undefined) values[key] = convert(key, raw);
    else if (setting.default !== undefined) values[key] = setting.default;
    else if (setting.required) throw new UsageError(`${key} is required (${flagName(key)}, ${envName(key)} or "${key}" in the config file)`);
  }
  const str = (key: Key): string | undefined => values[key] as string | undefined;
  const int = (key: Key): number => values[key] as number;
  const probeId = str('id') as string;
  if (!validateRequestId(probeId).ok) throw new UsageError('probe id must be 1 to 64 of A-Z a-z 0-9 _ . -');
  const broker = parseBrokerUrl(str('broker') as string);
  const tlsFiles = { ca: str('ca'), cert: str('cert'), key: str('key') };
  if (!broker.secure && (tlsFiles.ca || tlsFiles.cert || tlsFiles.key)) throw new UsageError('--ca, --cert and --key need an mqtts:// broker');
  if ((tlsFiles.cert === undefined) !== (tlsFiles.key === undefined)) throw new UsageError('--cert and --key go together');
  const resolver = str('resolver');
  if (resolver !== undefined) checkResolver(resolver);
  if (int('reconnect_min_ms') > int('reconnect_max_ms')) throw new UsageError('reconnect_min_ms must not exceed reconnect_max_ms');
  const tls = {
    ...(tlsFiles.ca !== undefined && { ca: readPem(tlsFiles.ca, 'CA') }),
    ...(tlsFiles.cert !== undefined && { cert: readPem(tlsFiles.cert, 'certificate') }),
    ...(tlsFiles.key !== undefined && { key: readPem(tlsFiles.key, 'key') }),
  };
  checkTlsMaterial(tls);
  return {
    probeId,
    broker,
    tls,
    dataDir: str('data') as string,
    allowPrivate: values.allow_private as boolean,
    ...(resolver !== undefined && { resolver }),
    ...(values.prb_id !== undefined && { prbId: int('prb_id') }),
    mqttVersion: int('mqtt_version') as 4 | 5,
    keepaliveS: int('keepalive_s'),
    sessionExpiryS: int('session_expiry_s'),
    connectTimeoutMs: int('connect_timeout_ms'),
    reconnectMinMs: int('reconnect_min_ms'),
    reconnectMaxMs: int('reconnect_max_ms'),
    statusIntervalS: int('status_interval_s'),
    heapLimitBytes: int('heap_limit_mb') * 1024 * 1024,
    maxConcurrent: int('max_concurrent'),
    maxOneOffs: int('max_one_offs'),
    maxPeriodic: int('max_periodic'),
    targetBurst: int('target_burst'),
    targetRefillMs: int('target_refill_ms'),
    minIntervalS: int('min_interval_s'),
    maxPayloadBytes: int('max_payload_bytes'),
    cmdBurst: int('cmd_burst'),
    cmdPerS: int('cmd_per_s'),
    outboxMaxBytes: int('outbox_max_bytes'),
    outboxMaxEntries: int('outbox_max_entries'),
    inflightWindow: int('inflight_window'),
    resendMs: int('resend_ms'),
    shutdownGraceMs: int('shutdown_grace_ms'),
  };
}

/** Reads the agent's settings from argv (the arguments after `agent`), the environment and the file. */
export function loadAgentConfig(argv: string[], env: NodeJS.ProcessEnv): ConfigOutcome {
  try {
    const flags = parseFlags(argv);
    if (flags.help) return { kind: 'help', text: agentUsage() };
    const configFile = flags.configFile ?? env[envName('config')];
    const fromFile = configFile !== undefined ? readConfigFile(configFile) : {};
    return { kind: 'config', config: resolveConfig({ ...fromFile, ...readEnv(env), ...flags.raw }) };
  } catch (error) {
    if (error instanceof UsageError) return { kind: 'error', message: error.message };
    throw error;
  }
}
