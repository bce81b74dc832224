// The fleet broker setup shipped in scripts/mosquitto (config template and per-probe ACL) on a
// real Mosquitto with TLS client certificates: a probe is confined to its own topics, cannot
// take over another probe's session, and the reference controller consumes results through a
// shared subscription with MQTT 5 (several controllers split the load, each result stored once);
// end to end with the real agent (the built bundle) measuring a scripted SMTP peer.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { type PublishedResult, topics } from '../../firmware/agent/protocol';
import { newResult } from '../../firmware/result';
import { Controller } from '../../scripts/controller';
import { makeFleetCerts } from '../../scripts/mosquitto/certs';
import { testCerts } from '../helpers/certs';
import { FakeProbe, type Mosquitto, mosquittoSkipReason, outboxEmpty, startAgentProcess, startMosquitto, until, within } from '../helpers/mosquitto';
import { startPeer, starttlsConversation } from '../helpers/peers';
import { slowdown } from '../helpers/node-command';

const skip = mosquittoSkipReason();
const PROBES = ['probe-a', 'probe-b', 'probe-c'];
const CONTROLLERS = ['controller-1', 'controller-2'];

function result(probeId: string, reqId: string, resultId: string): PublishedResult {
  return {
    ...newResult({ dst_name: 'mx.test', dst_port: 25, af: 4, mode: 'starttls', timestamp: 1_700_000_000 }),
    phase: 'quit',
    result_id: resultId,
    req_id: reqId,
    probe_id: probeId,
  };
}

function storedIds(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => (JSON.parse(line) as PublishedResult).result_id);
}

describe('Mosquitto with the shipped fleet configuration', { skip }, () => {
  let broker: Mosquitto;
  let dir: string;
  const clients: MqttClient[] = [];

  before(async () => {
    broker = await startMosquitto([...PROBES, ...CONTROLLERS]);
    dir = mkdtempSync(join(tmpdir(), 'smtp-probe-mosq-test-'));
  });

  after(async () => {
    try {
      for (const client of clients) client.end(true);
      await broker?.stop();
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  async function connect(identity: string, options: { clientId?: string; protocolVersion?: 4 | 5; clean?: boolean } = {}): Promise<MqttClient> {
    const client = mqtt.connect(broker.url, {
      protocolVersion: options.protocolVersion ?? 5,
      clientId: options.clientId ?? identity,
      clean: options.clean ?? true,
      reconnectPeriod: 0,
      ...broker.tls(identity),
    });
    clients.push(client);
    client.on('error', () => undefined);
    await within(
      new Promise<void>((resolve, reject) => {
        client.once('connect', () => resolve());
        client.once('error', reject);
      }),
      `${identity} connect`,
    );
    return client;
  }

  /** Collects every message on `filter` seen by a controller identity. */
  async function watch(filter: string): Promise<Map<string, string[]>> {
    const seen = new Map<string, string[]>();
    const watcher = await connect('controller-2', { clientId: `watcher-${Math.random()}` });
    watcher.on('message', (topic, payload) => seen.set(topic, [...(seen.get(topic) ?? []), payload.toString()]));
    await watcher.subscribeAsync(filter, { qos: 1 });
    return seen;
  }

  function arrival(seen: Map<string, string[]>, topic: string): Promise<void> {
    return until(() => seen.has(topic), `a message on ${topic}`);
  }

  it('refuses a probe publishing outside its own subtree (MQTT 5: PUBACK 135) and delivers nothing', async () => {
    const seen = await watch('fleet/v1/#');
    const probeA = await connect('probe-a');
    const outside = [
      topics.result('probe-b', 'spoofed'),
      topics.status('probe-b'),
      topics.cmd('probe-a', 'self-request'),
      topics.resultAck('probe-a'),
      topics.cmd('probe-b', 'request-for-b'),
    ];
    for (const topic of outside) {
      await assert.rejects(probeA.publishAsync(topic, 'x', { qos: 1 }), (error: { code?: number }) => error.code === 135, topic);
    }
    // Mosquitto keeps one publisher's messages in order: when the allowed one has arrived, any
    // refused one would have arrived before it.
    await probeA.publishAsync(topics.result('probe-a', 'allowed'), 'ok', { qos: 1 });
    await arrival(seen, topics.result('probe-a', 'allowed'));
    for (const topic of outside) assert.equal(seen.has(topic), false, topic);
  });

  it('drops the same publish silently for an MQTT 3.1.1 probe, which has no reason codes', async () => {
    const seen = await watch('fleet/v1/#');
    const probeB = await connect('probe-b', { protocolVersion: 4 });
    await probeB.publishAsync(topics.result('probe-c', 'spoofed-v4'), 'x', { qos: 1 });
    await probeB.publishAsync(topics.result('probe-b', 'allowed-v4'), 'ok', { qos: 1 });
    await arrival(seen, topics.result('probe-b', 'allowed-v4'));
    assert.equal(seen.has(topics.result('probe-c', 'spoofed-v4')), false);
  });

  it('does not let a probe read another probe requests', async () => {
    const probeC = await connect('probe-c');
    const received: string[] = [];
    probeC.on('message', (topic) => received.push(topic));
    // Mosquitto 2.0 grants the subscription and applies the read ACL to each delivery.
    await probeC.subscribeAsync(topics.cmdFilter('probe-a'), { qos: 1 });
    await probeC.subscribeAsync(topics.cmdFilter('probe-c'), { qos: 1 });
    const controller = await connect('controller-1', { clientId: 'controller-1' });
    await controller.publishAsync(topics.cmd('probe-a', 'for-a'), '{}', { qos: 1 });
    await controller.publishAsync(topics.cmd('probe-c', 'for-c'), '{}', { qos: 1 });
    await until(() => received.includes(topics.cmd('probe-c', 'for-c')), 'own command');
    assert.deepEqual(received, [topics.cmd('probe-c', 'for-c')]);
    await controller.endAsync();
  });

  it('refuses a client without a certificate, and one whose certificate another CA issued', async () => {
    mkdirSync(join(dir, 'rogue'));
    const rogue = makeFleetCerts(join(dir, 'rogue'), ['probe-a']);
    const { ca } = broker.tls('probe-a');
    const attempts = [
      { ca },
      { ca, cert: readFileSync(rogue.clients['probe-a'].certFile), key: readFileSync(rogue.clients['probe-a'].keyFile) },
    ];
    for (const [index, tls] of attempts.entries()) {
      const client = mqtt.connect(broker.url, { protocolVersion: 5, clientId: 'probe-a', reconnectPeriod: 0, connectTimeout: 5_000, ...tls });
      clients.push(client);
      const outcome = await within(
        new Promise<string>((resolve) => {
          client.once('connect', () => resolve('connected'));
          client.once('error', () => resolve('refused'));
          client.once('close', () => resolve('refused'));
        }),
        `attempt ${index}`,
      );
      assert.equal(outcome, 'refused', `attempt ${index}`);
    }
  });

  it('does not let one probe take over another probe session by its client id', async () => {
    const owner = await connect('probe-a', { clientId: 'probe-a', clean: false });
    let ownerDropped = false;
    owner.on('close', () => (ownerDropped = true));
    // probe-b claims probe-a's client id: use_username_as_clientid replaces it with probe-b.
    await connect('probe-b', { clientId: 'probe-a', clean: false });
    await owner.publishAsync(topics.status('probe-a'), '', { qos: 1 });
    assert.equal(ownerDropped, false, 'probe-a still connected after probe-b claimed its client id');
    assert.match(broker.log(), /as probe-b \(p5/);
    // The control: the same identity does take over its own session (a probe that reconnects
    // before the broker noticed the old connection is gone).
    await connect('probe-a', { clientId: 'anything', clean: false });
    await within(
      new Promise<void>((resolve) => {
        if (ownerDropped) resolve();
        else owner.once('close', () => resolve());
      }),
      'takeover by the same identity',
    );
  });

  it('two controllers on one shared subscription split the results, each stored once; a closed one leaves the share', async () => {
    const files = [join(dir, 'ctl-1.jsonl'), join(dir, 'ctl-2.jsonl')];
    const controllers = await Promise.all(
      CONTROLLERS.map((identity, index) => Controller.start({ brokerUrl: broker.url, resultsFile: files[index], protocolVersion: 5, ...broker.tls(identity) })),
    );
    const probe = await FakeProbe.connect(broker.url, 'probe-c', { protocolVersion: 5, tls: broker.tls('probe-c') });
    try {
      const ids = Array.from({ length: 20 }, (_value, index) => `shared-${index}`);
      for (const id of ids) await probe.publish(result('probe-c', 'req-shared', id));
      for (const id of ids) await probe.waitForResultAck(id);
      const stored = files.map(storedIds);
      assert.deepEqual([...stored[0], ...stored[1]].sort(), [...ids].sort(), 'every result stored exactly once over both controllers');
      assert.ok(stored[0].length > 0 && stored[1].length > 0, `both controllers took a share: ${stored[0].length} and ${stored[1].length}`);

      // The fake probe never resends: a result routed to the closed controller's session
      // would never be acked.
      await controllers[1].close();
      const later = Array.from({ length: 10 }, (_value, index) => `after-close-${index}`);
      for (const id of later) await probe.publish(result('probe-c', 'req-shared', id));
      for (const id of later) await probe.waitForResultAck(id);
      assert.deepEqual(storedIds(files[0]).filter((id) => id.startsWith('after-close-')).sort(), [...later].sort());
    } finally {
      await probe.close();
      for (const controller of controllers) await controller.close();
    }
  });

  it('end to end: the agent measures on request over mqtts, the controller stores and acks through its shared subscription', async () => {
    const files = broker.certs.clients['probe-b'];
    const agent = await startAgentProcess([
      '--broker', broker.url, '--id', 'probe-b', '--data', join(dir, 'agent-probe-b'), '--allow-private',
      '--ca', broker.certs.caFile, '--cert', files.certFile, '--key', files.keyFile,
    ]);
    const peer = await startPeer(starttlsConversation(testCerts().valid));
    const resultsFile = join(dir, 'e2e.jsonl');
    const controller = await Controller.start({ brokerUrl: broker.url, resultsFile, protocolVersion: 5, ...broker.tls('controller-1') });
    try {
      await agent.explain(controller.waitForProbes(['probe-b'], 10_000 * slowdown()));
      const stored = new Promise<PublishedResult>((resolve) => controller.once('stored', resolve));
      const ack = await controller.request('probe-b', { type: 'smtp', target: '127.0.0.1', port: peer.port, timeout: 5_000 }, 'mosq-e2e');
      assert.deepEqual(ack, { req_id: 'mosq-e2e', accepted: true });
      const published = await agent.explain(within(stored, 'the result'));
      assert.deepEqual([published.probe_id, published.req_id, published.status], ['probe-b', 'mosq-e2e', 'ok']);
      assert.ok(published.ehlo && 'STARTTLS' in published.ehlo.capabilities);
      assert.deepEqual(storedIds(resultsFile), [published.result_id]);
      await until(() => outboxEmpty(join(dir, 'agent-probe-b')), 'the agent to delete the acked result');
    } finally {
      await agent.stop();
      await controller.close();
      await peer.close();
    }
  });
});
