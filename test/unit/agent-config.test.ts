// The agent's settings: flags, environment and config file, their precedence, defaults and
// usage errors; and the reconnect backoff.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { type AgentConfig, loadAgentConfig } from '../../firmware/agent/config';
import { reconnectDelay } from '../../firmware/agent/link';
import { testCerts } from '../helpers/certs';

const dir = mkdtempSync(join(tmpdir(), 'agent-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const REQUIRED = ['--broker', 'mqtt://127.0.0.1:1883', '--id', 'probe-1', '--data', '/var/lib/probe'];

function config(argv: string[], env: NodeJS.ProcessEnv = {}): AgentConfig {
  const outcome = loadAgentConfig(argv, env);
  assert.equal(outcome.kind, 'config', outcome.kind === 'error' ? outcome.message : '');
  return (outcome as { config: AgentConfig }).config;
}

function usageError(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  const outcome = loadAgentConfig(argv, env);
  assert.equal(outcome.kind, 'error');
  return (outcome as { message: string }).message;
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('agent config', () => {
  test('flags give the required settings; the rest are defaults', () => {
    const result = config(REQUIRED);
    assert.equal(result.probeId, 'probe-1');
    assert.deepEqual(result.broker, { secure: false, host: '127.0.0.1', port: 1883 });
    assert.equal(result.dataDir, '/var/lib/probe');
    assert.equal(result.allowPrivate, false);
    assert.equal(result.mqttVersion, 5);
    assert.equal(result.heapLimitBytes, 64 * 1024 * 1024);
    assert.deepEqual(result.tls, {});
  });

  test('--flag=value, boolean flags and numbers', () => {
    const result = config([...REQUIRED, '--allow-private', '--heap-limit-mb=48', '--mqtt-version', '4', '--resolver', '[::1]:5353']);
    assert.equal(result.allowPrivate, true);
    assert.equal(result.heapLimitBytes, 48 * 1024 * 1024);
    assert.equal(result.mqttVersion, 4);
    assert.equal(result.resolver, '[::1]:5353');
  });

  test('the environment fills in, and flags win over it', () => {
    const env = { SMTP_PROBE_BROKER: 'mqtt://[::1]', SMTP_PROBE_ID: 'env-probe', SMTP_PROBE_DATA: '/data', SMTP_PROBE_MAX_CONCURRENT: '3', SMTP_PROBE_ALLOW_PRIVATE: 'true' };
    const fromEnv = config([], env);
    assert.equal(fromEnv.probeId, 'env-probe');
    assert.deepEqual(fromEnv.broker, { secure: false, host: '::1', port: 1883 });
    assert.equal(fromEnv.maxConcurrent, 3);
    assert.equal(fromEnv.allowPrivate, true);
    assert.equal(config(['--id', 'flag-probe'], env).probeId, 'flag-probe');
  });

  test('the config file is the lowest layer', () => {
    const path = file('agent.json', JSON.stringify({ broker: 'mqtt://broker.test:1999', id: 'file-probe', data: '/file', max_concurrent: 7, allow_private: true }));
    const fromFile = config(['--config', path]);
    assert.equal(fromFile.probeId, 'file-probe');
    assert.deepEqual(fromFile.broker, { secure: false, host: 'broker.test', port: 1999 });
    assert.equal(fromFile.maxConcurrent, 7);
    assert.equal(config(['--config', path], { SMTP_PROBE_MAX_CONCURRENT: '2' }).maxConcurrent, 2);
    assert.equal(config([], { SMTP_PROBE_CONFIG: path, SMTP_PROBE_ID: 'env' }).probeId, 'env');
  });

  test('mqtts reads the CA, certificate and key files', () => {
    const { ca, valid } = testCerts();
    const result = config(['--broker', 'mqtts://broker.test', '--id', 'p', '--data', '/d', '--ca', ca.certFile, '--cert', valid.certFile, '--key', valid.keyFile]);
    assert.deepEqual(result.broker, { secure: true, host: 'broker.test', port: 8883 });
    assert.deepEqual(result.tls, { ca: Buffer.from(ca.cert), cert: Buffer.from(valid.cert), key: Buffer.from(valid.key) });
  });

  test('usage error: TLS files that are not PEM, or a key that is not the certificate\'s', () => {
    const { valid, wrongName } = testCerts();
    const mqtts = ['--broker', 'mqtts://broker.test', '--id', 'p', '--data', '/d'];
    assert.match(usageError([...mqtts, '--ca', file('not-pem.txt', 'hello')]), /cannot use the TLS files/);
    assert.match(usageError([...mqtts, '--cert', valid.certFile, '--key', wrongName.keyFile]), /cannot use the TLS files/);
  });

  test('--help', () => {
    const outcome = loadAgentConfig(['--help'], {});
    assert.equal(outcome.kind, 'help');
    assert.match((outcome as { text: string }).text, /--heap-limit-mb N +heap budget.*\[8\.\.4096\] \(default 64\)/);
  });

  const errors: Array<[string, string[], RegExp]> = [
    ['a missing broker', ['--id', 'p', '--data', '/d'], /broker is required/],
    ['an unknown flag', [...REQUIRED, '--bogus'], /unknown argument "--bogus"/],
    ['a flag without its value', [...REQUIRED, '--heap-limit-mb'], /--heap-limit-mb needs a value/],
    ['a number out of range', [...REQUIRED, '--heap-limit-mb', '2'], /heap_limit_mb .* from 8 to 4096/],
    ['a non-number', [...REQUIRED, '--max-concurrent', 'ten'], /max_concurrent/],
    ['MQTT 3', [...REQUIRED, '--mqtt-version', '3'], /mqtt_version/],
    ['a bad boolean', [...REQUIRED, '--allow-private=maybe'], /true or false/],
    ['a websocket broker', ['--broker', 'ws://h', '--id', 'p', '--data', '/d'], /mqtt:\/\/ or mqtts:\/\//],
    ['a broker with a path', ['--broker', 'mqtt://h/x', '--id', 'p', '--data', '/d'], /only a host and a port/],
    ['a probe id with a slash', ['--broker', 'mqtt://h', '--id', 'a/b', '--data', '/d'], /probe id/],
    ['TLS files with mqtt://', [...REQUIRED, '--ca', '/x'], /need an mqtts:\/\/ broker/],
    ['a certificate without key', ['--broker', 'mqtts://h', '--id', 'p', '--data', '/d', '--cert', '/x'], /go together/],
    ['an unreadable CA', ['--broker', 'mqtts://h', '--id', 'p', '--data', '/d', '--ca', '/nonexistent/ca.pem'], /cannot read CA file .*ENOENT/],
    ['a resolver name', [...REQUIRED, '--resolver', 'dns.test:53'], /resolver/],
    ['backoff bounds reversed', [...REQUIRED, '--reconnect-min-ms', '5000', '--reconnect-max-ms', '100'], /reconnect_min_ms/],
  ];
  for (const [name, argv, message] of errors) {
    test(`usage error: ${name}`, () => assert.match(usageError(argv), message));
  }

  test('usage error: unknown config file keys and bad files', () => {
    assert.match(usageError(['--config', file('extra.json', JSON.stringify({ id: 'p', colour: 'red' }))]), /unknown key "colour"/);
    assert.match(usageError(['--config', file('array.json', '[]')]), /JSON object/);
    assert.match(usageError(['--config', file('broken.json', '{')]), /cannot read config file/);
    assert.match(usageError(['--config', file('types.json', JSON.stringify({ ...{ broker: 'mqtt://h', id: 'p', data: '/d' }, max_concurrent: '5x' }))]), /max_concurrent/);
  });
});

describe('reconnect backoff', () => {
  test('grows from the shortest delay, is capped, and keeps at least half its ceiling', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 10, max: 10_000 }), fc.integer({ min: 10, max: 600_000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, minMs, extra, random) => {
        const maxMs = minMs + extra;
        const ceiling = Math.min(maxMs, minMs * 2 ** attempt);
        const delay = reconnectDelay(attempt, minMs, maxMs, () => random);
        assert.ok(delay >= Math.floor(ceiling / 2) && delay <= Math.ceil(ceiling), `${delay} outside [${ceiling / 2}, ${ceiling}]`);
      }),
    );
    assert.deepEqual([0, 1, 2, 3, 10].map((attempt) => reconnectDelay(attempt, 1000, 60_000, () => 0)), [500, 1000, 2000, 4000, 30_000]);
  });
});
