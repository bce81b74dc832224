// The agent's MQTT 5 link against a real Mosquitto (started by the test on a free loopback
// port, TLS with client certificates, the fleet ACL): birth status, request, result,
// result-ack, offline status at stop, and the persistent session (a command sent while the
// probe is away arrives when it comes back).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { type Ack, type ProbeStatus, type PublishedResult, topics } from '../../firmware/agent/protocol';
import { type AgentFixture, startAgent, tempDataDir, testConfig, waitFor } from '../helpers/agent-harness';
import { testCerts } from '../helpers/certs';
import { type Mosquitto, mosquittoSkipReason, startMosquitto } from '../helpers/mosquitto';

const PROBE = 'probe-mq5';
const skip = mosquittoSkipReason();

describe('agent over Mosquitto with MQTT 5 and client certificates', { skip }, () => {
  let broker: Mosquitto;
  let controller: MqttClient;
  const statuses: ProbeStatus[] = [];
  const acks: Ack[] = [];
  const results: PublishedResult[] = [];

  before(async () => {
    broker = await startMosquitto([PROBE, 'controller-1']);
    controller = mqtt.connect(broker.url, { protocolVersion: 5, reconnectPeriod: 0, ...broker.tls('controller-1') });
    controller.on('error', () => undefined);
    controller.on('message', (topic, payload) => {
      const body: unknown = JSON.parse(payload.toString());
      if (topic === topics.status(PROBE)) statuses.push(body as ProbeStatus);
      else if (topic.includes('/ack/')) acks.push(body as Ack);
      else if (topic.includes('/result/')) results.push(body as PublishedResult);
    });
    await waitFor(() => (controller.connected ? true : undefined), 'controller connect');
    await controller.subscribeAsync({
      [topics.status(PROBE)]: { qos: 1 },
      [`fleet/v1/probe/${PROBE}/ack/+`]: { qos: 1 },
      [`fleet/v1/probe/${PROBE}/result/+`]: { qos: 1 },
    });
  });
  after(async () => {
    await controller?.endAsync(true);
    await broker?.stop();
  });

  function mqttsConfig(dataDir: string) {
    const config = testConfig(broker.url, PROBE, dataDir, ['--mqtt-version', '5']);
    return { ...config, tls: broker.tls(PROBE) };
  }

  function send(reqId: string, payload: object): Promise<unknown> {
    return controller.publishAsync(topics.cmd(PROBE, reqId), JSON.stringify(payload), { qos: 1 });
  }

  test('request, result, result-ack; offline status at stop; a command sent while the probe is away arrives when it returns', async (t) => {
    const dataDir = tempDataDir();
    let fixture: AgentFixture = await startAgent(mqttsConfig(dataDir));
    t.after(() => fixture.stop());
    const birth = await waitFor(() => statuses.find((status) => status.online), 'birth status');
    assert.equal(birth.probe_id, PROBE);

    await send('first', { type: 'smtp', target: 'mx.example.org' });
    assert.deepEqual(await waitFor(() => acks.find((ack) => ack.req_id === 'first'), 'ack'), { req_id: 'first', accepted: true });
    const result = await waitFor(() => results.find((r) => r.req_id === 'first'), 'result');
    assert.equal(fixture.outboxFiles().length, 1, 'kept until the controller acknowledges it');
    await controller.publishAsync(topics.resultAck(PROBE), JSON.stringify({ result_ids: [result.result_id] }), { qos: 1 });
    await waitFor(() => (fixture.outboxFiles().length === 0 ? true : undefined), 'outbox emptied');

    // Away: a clean stop keeps the session (session expiry), so the broker queues the command.
    const seen = statuses.length;
    await fixture.agent.stop();
    assert.equal((await waitFor(() => statuses.slice(seen).find((status) => !status.online), 'offline status')).online, false);
    await send('while-away', { type: 'smtp', target: 'mx.example.org' });
    fixture = await startAgent(mqttsConfig(dataDir));
    assert.deepEqual(await waitFor(() => acks.find((ack) => ack.req_id === 'while-away'), 'ack of the queued command'), { req_id: 'while-away', accepted: true });
    assert.ok(fixture.logs.some((entry) => entry.event === 'mqtt-connected' && entry.fields?.session_present === true));
  });

  test('a broker certificate from another CA: each attempt fails and is logged, the agent retries and stays up', async (t) => {
    const config = mqttsConfig(tempDataDir());
    const fixture = await startAgent({ ...config, probeId: 'probe-wrong-ca', tls: { ...config.tls, ca: Buffer.from(testCerts().ca.cert) } });
    t.after(() => fixture.stop());
    const failures = () => fixture.logs.filter((entry) => entry.event === 'mqtt-error');
    await waitFor(() => (failures().length >= 3 ? true : undefined), 'three failed attempts');
    assert.ok(failures().every((entry) => /CERT|SIGNED|VERIFY/.test(String(entry.fields?.code))), JSON.stringify(failures()[0]));
    assert.equal(fixture.logs.some((entry) => entry.event === 'mqtt-connected'), false);
  });
});
