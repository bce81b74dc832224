// The agent against the embedded broker (aedes, MQTT 3.1.1) with a fake SMTP driver: the
// request path, bad input (each rejection with its reason, the agent alive after it), a broker
// outage while 1,000 results are made, and a full outbox.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { MeasureFn } from '../../firmware/agent/agent';
import type { MeasurementRequest, RejectReason } from '../../firmware/agent/protocol';
import { type EmbeddedBroker, startEmbeddedBroker } from '../../scripts/controller/broker';
import { fakeMeasure } from '../helpers/agent-fake-measure';
import { type AgentFixture, TestController, startAgent, tempDataDir, testConfig, waitFor } from '../helpers/agent-harness';

const SMALLEST: MeasurementRequest = { type: 'smtp', target: 'mx.example.org', af: 4, port: 25 };

describe('agent over the embedded broker', () => {
  let broker: EmbeddedBroker;
  before(async () => {
    broker = await startEmbeddedBroker();
  });
  after(() => broker.close());

  test('birth status, accepted ack, result, and the result-ack empties the outbox', async (t) => {
    const controller = await TestController.connect(broker.url, 'basic');
    t.after(() => controller.close());
    const fixture = await startAgent(testConfig(broker.url, 'basic', tempDataDir()));
    t.after(() => fixture.stop());
    const birth = await controller.waitOnline();
    assert.equal(birth.probe_id, 'basic');
    assert.deepEqual(birth.outbox, { depth: 0, bytes: 0, dropped: 0 });
    assert.ok(birth.heap && birth.heap.limit === 1024 * 1024 * 1024 && birth.heap.used > 0);
    assert.deepEqual(await controller.request('r1', SMALLEST), { req_id: 'r1', accepted: true });
    const result = await waitFor(() => controller.results[0], 'result');
    assert.equal(result.req_id, 'r1');
    assert.equal(result.probe_id, 'basic');
    assert.equal(result.dst_name, 'mx.example.org');
    assert.match(result.result_id, /^[0-9a-f-]{36}$/);
    await waitFor(() => (fixture.outboxFiles().length === 0 ? true : undefined), 'outbox emptied by the result-ack');
  });

  describe('bad input gets its reason, and the agent goes on', () => {
    let controller: TestController;
    let fixture: AgentFixture;
    let heapUsed = 0;
    before(async () => {
      controller = await TestController.connect(broker.url, 'strict');
      fixture = await startAgent(testConfig(broker.url, 'strict', tempDataDir(), ['--cmd-burst', '40', '--cmd-per-s', '1', '--max-payload-bytes', '1024', '--target-burst', '1000']), {
        heapUsed: () => heapUsed,
      });
      await controller.waitOnline();
    });
    after(async () => {
      await fixture.stop();
      await controller.close();
    });

    const cases: Array<[string, string, string | object, RejectReason]> = [
      ['malformed JSON', 'bad-json', '{"type":"smtp","target":', 'malformed-json'],
      ['an oversized payload', 'too-big', { type: 'smtp', target: 'mx.example.org', helo: `${'a'.repeat(60)}.`.repeat(20) }, 'payload-too-large'],
      ['an unknown field', 'unknown', { ...SMALLEST, body: 'hello' }, 'unknown-field'],
      ['a wrong type', 'wrong-type', { ...SMALLEST, port: '25' }, 'invalid-field'],
      ['an interval out of range', 'interval', { ...SMALLEST, interval: 5 }, 'invalid-field'],
      ['a private target', 'private', { ...SMALLEST, target: '192.168.1.1' }, 'target-not-allowed'],
      ['a loopback target', 'loopback', { type: 'smtp', target: '::1' }, 'target-not-allowed'],
      ['an unsupported type', 'ping', { type: 'ping' }, 'unsupported-type'],
      ['a missing target', 'no-target', { type: 'smtp' }, 'missing-field'],
      ['a bad request id', 'bad id!', SMALLEST, 'invalid-request-id'],
      ['a stop for an unknown request', 'stop-unknown', { type: 'stop', req_id: 'never-sent' }, 'unknown-request'],
    ];
    for (const [name, reqId, payload, reason] of cases) {
      test(name, async () => {
        const ack = await controller.request(reqId, payload);
        assert.equal(ack.accepted, false);
        if (ack.accepted) return;
        assert.equal(ack.reason, reason);
        assert.ok(ack.message.length > 0);
        assert.deepEqual(await controller.request(`${reqId.replace(/[^a-z-]/g, '')}-then-valid`, SMALLEST), { req_id: `${reqId.replace(/[^a-z-]/g, '')}-then-valid`, accepted: true });
      });
    }

    test('a duplicate request id: same bytes get the same ack again, other bytes are rejected', async () => {
      assert.deepEqual(await controller.request('dup', SMALLEST), { req_id: 'dup', accepted: true });
      assert.deepEqual(await controller.request('dup', SMALLEST), { req_id: 'dup', accepted: true });
      const other = await controller.request('dup', { ...SMALLEST, port: 587 });
      assert.equal(other.accepted === false && other.reason, 'duplicate-request');
      const rejectedTwice = await controller.request('dup-bad', '{');
      assert.equal(rejectedTwice.accepted === false && rejectedTwice.reason, 'malformed-json');
      assert.equal((await controller.request('dup-bad', '{')).accepted, false);
      await waitFor(() => (controller.results.filter((result) => result.req_id === 'dup').length === 1 ? true : undefined), 'one result for dup');
    });

    test('memory pressure refuses new work, and the agent takes work again when it eases', async () => {
      heapUsed = 1000 * 1024 * 1024;
      const refused = await controller.request('pressure', SMALLEST);
      assert.equal(refused.accepted === false && refused.reason, 'memory-pressure');
      heapUsed = 0;
      assert.deepEqual(await controller.request('pressure', SMALLEST), { req_id: 'pressure', accepted: true });
    });

    test('a flood of requests is bounded: beyond the burst, too-many-requests', async () => {
      const sent = Array.from({ length: 60 }, (_, i) => `flood-${i}`);
      await Promise.all(sent.map((reqId) => controller.send(reqId, { type: 'stop', req_id: 'none' })));
      const acks = await waitFor(() => {
        const got = sent.map((reqId) => controller.acks.get(reqId)?.[0]);
        return got.every((ack) => ack !== undefined) ? got : undefined;
      }, 'acks of the flood');
      const reasons = acks.map((ack) => (ack && !ack.accepted ? ack.reason : 'accepted'));
      assert.ok(reasons.includes('too-many-requests'), reasons.join());
      assert.ok(reasons.every((reason) => reason === 'too-many-requests' || reason === 'unknown-request'), reasons.join());
      // Alive: once the bucket refills, commands are taken again.
      await new Promise((resolve) => setTimeout(resolve, 1100));
      assert.deepEqual(await controller.request('after-flood', SMALLEST), { req_id: 'after-flood', accepted: true });
    });
  });

  test('a periodic request runs each interval until stopped', async (t) => {
    const controller = await TestController.connect(broker.url, 'periodic');
    t.after(() => controller.close());
    const fixture = await startAgent(testConfig(broker.url, 'periodic', tempDataDir(), ['--min-interval-s', '1']));
    t.after(() => fixture.stop());
    await controller.waitOnline();
    assert.deepEqual(await controller.request('every-second', { ...SMALLEST, interval: 1 }), { req_id: 'every-second', accepted: true });
    await waitFor(() => (controller.results.length >= 2 ? true : undefined), 'two periodic results');
    await waitFor(() => (fixture.agent.status().queue?.periodic === 1 ? true : undefined), 'periodic depth in the status');
    assert.deepEqual(await controller.request('stop-it', { type: 'stop', req_id: 'every-second' }), { req_id: 'stop-it', accepted: true });
    const count = controller.results.length;
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.ok(controller.results.length <= count + 1, 'at most a run already started finishes after the stop');
    assert.equal(fixture.agent.status().queue?.periodic, 0);
  });

  test('broker down while 1,000 results are made, then back: every one delivered, none twice', async (t) => {
    const outageBroker = await startEmbeddedBroker();
    let brokerNow: EmbeddedBroker | undefined = outageBroker;
    t.after(() => brokerNow?.close());
    const controller = await TestController.connect(outageBroker.url, 'outage');
    t.after(() => controller.close());
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const quick = fakeMeasure(1);
    // Held until the broker is down; an abort (the agent stopping) lets it go too.
    const gated: MeasureFn = async (options) => {
      await new Promise<void>((resolve) => {
        void gate.then(resolve);
        options.signal?.addEventListener('abort', () => resolve(), { once: true });
      });
      return quick(options);
    };
    const flags = ['--max-one-offs', '1000', '--max-concurrent', '100', '--target-burst', '1000', '--cmd-burst', '1000', '--inflight-window', '50'];
    const fixture = await startAgent(testConfig(outageBroker.url, 'outage', tempDataDir(), flags), { measure: gated });
    t.after(() => fixture.stop());
    await controller.waitOnline();

    const reqIds = Array.from({ length: 1000 }, (_, i) => `m${i}`);
    await Promise.all(reqIds.map((reqId) => controller.send(reqId, SMALLEST)));
    await waitFor(() => (reqIds.every((reqId) => controller.acks.get(reqId)?.[0]?.accepted) ? true : undefined), '1,000 accepted acks', 180_000);

    await outageBroker.close();
    brokerNow = undefined;
    release();
    await waitFor(() => (fixture.agent.status().outbox?.depth === 1000 ? true : undefined), '1,000 results in the outbox', 120_000);
    assert.equal(controller.results.length, 0);

    brokerNow = await startEmbeddedBroker({ port: outageBroker.port });
    await waitFor(() => (controller.uniqueResults().size === 1000 ? true : undefined), 'every result delivered', 120_000);
    await waitFor(() => (fixture.agent.status().outbox?.depth === 0 ? true : undefined), 'outbox emptied', 30_000);
    const unique = controller.uniqueResults();
    assert.deepEqual([...new Set([...unique.values()].map((result) => result.req_id))].sort(), [...reqIds].sort());
    assert.equal(fixture.agent.status().outbox?.dropped, 0);
  });

  test('outbox full: the oldest results are dropped, counted and reported in the status', async (t) => {
    const controller = await TestController.connect(broker.url, 'full');
    t.after(() => controller.close());
    controller.autoAck = false;
    const flags = ['--outbox-max-entries', '5', '--max-concurrent', '1', '--target-burst', '100'];
    const fixture = await startAgent(testConfig(broker.url, 'full', tempDataDir(), flags));
    t.after(() => fixture.stop());
    await controller.waitOnline();
    const reqIds = Array.from({ length: 8 }, (_, i) => `full-${i}`);
    for (const reqId of reqIds) assert.deepEqual(await controller.request(reqId, SMALLEST), { req_id: reqId, accepted: true });
    const status = await waitFor(() => controller.statuses.find((s) => s.outbox?.dropped === 3), 'status reporting 3 dropped');
    assert.equal(status.outbox?.depth, 5);
    assert.deepEqual(
      fixture.outboxFiles().map((name) => name.replace(/^\d+_[0-9a-f-]{36}_(.*)\.json$/, '$1')),
      reqIds.slice(3),
    );
    assert.ok(fixture.logs.some((entry) => entry.event === 'outbox-dropped'));
    await controller.ackResults([...controller.uniqueResults().keys()]);
    await waitFor(() => (fixture.outboxFiles().length === 0 ? true : undefined), 'outbox emptied');
  });
});
