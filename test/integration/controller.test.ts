// The reference controller (scripts/controller.ts) over the embedded broker: probe tracking by
// retained status, requests and acks, results stored once (deduplicated by result_id, also
// across a restart) and acknowledged only after their line is on disk, bad results refused
// and never acknowledged, and the per-target table marking a stripped path. End to end: the
// real agent (the built bundle) measures a scripted SMTP peer on request.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ProbeStatus, type PublishedResult, type ResultAck, topics } from '../../firmware/agent/protocol';
import { newResult } from '../../firmware/result';
import { testCerts } from '../helpers/certs';
import { type AgentProcess, FakeProbe, outboxEmpty, startAgentProcess, until, within } from '../helpers/mosquitto';
import { type ScriptedPeer, startPeer, starttlsConversation } from '../helpers/peers';
import { freeLoopbackPorts } from '../helpers/ports';
import { BoundedIdSet, Controller, type EmbeddedBroker, type Refusal, ResultStore, STRIPPED_MARK, type StoredRecord, buildTable, renderTable, startEmbeddedBroker } from '../../scripts/controller';
import { slowdown } from '../helpers/node-command';

const DEADLINE_MS = 10_000 * slowdown();

function result(probeId: string, reqId: string, resultId: string, fields: Partial<PublishedResult> = {}): PublishedResult {
  const base = newResult({ dst_name: 'mx.test', dst_port: 25, af: 4, mode: 'starttls', timestamp: 1_700_000_000 });
  return {
    ...base,
    status: 'ok',
    phase: 'quit',
    ehlo: { code: 250, lines: ['mx.test', 'STARTTLS'], rt: 1, capabilities: { STARTTLS: [] } },
    tls: { method: 'TLS', ver: '1.3' },
    ...fields,
    result_id: resultId,
    req_id: reqId,
    probe_id: probeId,
  };
}

function storedIds(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => (JSON.parse(line) as PublishedResult).result_id);
}

describe('result store', () => {
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-store-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const record = (resultId: string, probeId = 'probe-a'): StoredRecord => ({ probe_id: probeId, result_id: resultId });
  const ids = (records: StoredRecord[]): string[] => records.map((stored) => stored.result_id);

  it('stores each result once, also across a reopen, and reports the duplicates', async () => {
    const file = join(dir, 'dedup.jsonl');
    const first = await ResultStore.open(file);
    const outcome = await first.append([record('a'), record('b'), record('a')]);
    assert.deepEqual([ids(outcome.stored), ids(outcome.duplicates)], [['a', 'b'], ['a']]);
    await first.close();
    const second = await ResultStore.open(file);
    const again = await second.append([record('b'), record('c')]);
    assert.deepEqual([ids(again.stored), ids(again.duplicates)], [['c'], ['b']]);
    await second.close();
    assert.deepEqual(storedIds(file), ['a', 'b', 'c']);
  });

  it('keys results by probe and result_id: another probe cannot shadow a result by reusing its id', async () => {
    const file = join(dir, 'per-probe.jsonl');
    const store = await ResultStore.open(file);
    await store.append([record('same', 'probe-rogue')]);
    const outcome = await store.append([record('same', 'probe-a')]);
    assert.deepEqual([ids(outcome.stored), ids(outcome.duplicates)], [['same'], []]);
    await store.close();
  });

  it('cuts a torn last line before appending, so that the next record stays readable', async () => {
    const file = join(dir, 'torn.jsonl');
    writeFileSync(file, '{"probe_id":"p","result_id":"whole"}\n{"probe_id":"p","result_id":"to');
    const store = await ResultStore.open(file);
    assert.equal(store.has({ probe_id: 'p', result_id: 'whole' }), true);
    await store.append([record('next', 'p')]);
    await store.close();
    assert.equal(readFileSync(file, 'utf8'), '{"probe_id":"p","result_id":"whole"}\n{"probe_id":"p","result_id":"next"}\n');
  });

  it('remembers only the most recent ids when reloading beyond its bound', async () => {
    const file = join(dir, 'bounded.jsonl');
    writeFileSync(file, ['x1', 'x2', 'x3', 'x4'].map((id) => JSON.stringify(record(id))).join('\n') + '\n');
    const store = await ResultStore.open(file, 2);
    assert.equal(store.rememberedIds, 2);
    assert.deepEqual(['x1', 'x2', 'x3', 'x4'].map((id) => store.has(record(id))), [false, false, true, true]);
    await store.close();
  });

  it('bounded id set evicts in insertion order', () => {
    const set = new BoundedIdSet(3);
    for (const id of ['a', 'b', 'c', 'a', 'd']) set.add(id);
    assert.deepEqual([set.has('a'), set.has('b'), set.has('c'), set.has('d'), set.size], [false, true, true, true, 3]);
  });
});

describe('per-target table', () => {
  const stripped = (probe: string): PublishedResult =>
    result(probe, 'r', `${probe}-1`, { ehlo: { code: 250, lines: ['mx.test'], rt: 1, capabilities: {} }, tls: undefined, findings: ['starttls-not-supported'] });

  it('marks the probe that lacks STARTTLS where another probe sees it', () => {
    const rows = buildTable([result('probe-a', 'r', 'a-1'), result('probe-b', 'r', 'b-1'), stripped('probe-c')]);
    assert.deepEqual(
      rows.map((row) => [row.probe, row.starttls, row.tls, row.stripped]),
      [
        ['probe-a', 'yes', '1.3', false],
        ['probe-b', 'yes', '1.3', false],
        ['probe-c', 'no', '-', true],
      ],
    );
    const text = renderTable(rows);
    assert.equal(text.split('\n').filter((line) => line.includes(STRIPPED_MARK)).length, 1);
    assert.match(text, /probe-c\s+ok\s+no\s+-\s+starttls-not-supported\s+STRIPPED\?/);
  });

  it('marks nothing when no probe sees STARTTLS, and a mangled capability counts as missing', () => {
    assert.deepEqual(buildTable([stripped('probe-a'), stripped('probe-b')]).map((row) => row.stripped), [false, false]);
    const mangled = result('probe-b', 'r', 'b-1', { ehlo: { code: 250, lines: ['mx.test', 'XXXXXXXA'], rt: 1, capabilities: { XXXXXXXA: [] } }, findings: ['starttls-capability-mangled'] });
    assert.deepEqual(buildTable([result('probe-a', 'r', 'a-1'), mangled]).map((row) => [row.starttls, row.stripped]), [
      ['yes', false],
      ['mangled', true],
    ]);
  });

  it('keeps the latest result of each probe and target', () => {
    const older = stripped('probe-a');
    const newer = result('probe-a', 'r', 'a-2', { timestamp: older.timestamp + 60 });
    assert.deepEqual(buildTable([newer, older]).map((row) => row.starttls), ['yes']);
  });
});

describe('controller over the embedded broker', () => {
  let broker: EmbeddedBroker;
  let dir: string;
  let file: string;
  let controller: Controller;
  const probes: FakeProbe[] = [];

  before(async () => {
    broker = await startEmbeddedBroker();
    dir = mkdtempSync(join(tmpdir(), 'smtp-probe-ctl-'));
    file = join(dir, 'results.jsonl');
    controller = await Controller.start({ brokerUrl: broker.url, resultsFile: file, protocolVersion: 4, ackTimeoutMs: 3_000 });
  });

  after(async () => {
    try {
      for (const probe of probes) probe.drop();
      await controller.close();
      await broker.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  async function probe(id: string): Promise<FakeProbe> {
    const connected = await FakeProbe.connect(broker.url, id);
    probes.push(connected);
    return connected;
  }

  it('tracks probes by their retained status, and the last will marks one offline', async () => {
    const online = await probe('probe-status');
    await within(controller.waitForProbes(['probe-status'], DEADLINE_MS), 'probe online');
    assert.ok(controller.onlineProbes().includes('probe-status'));
    const offline = new Promise<void>((resolve) => {
      const onStatus = (status: ProbeStatus): void => {
        if (status.probe_id !== 'probe-status' || status.online) return;
        controller.removeListener('status', onStatus);
        resolve();
      };
      controller.on('status', onStatus);
    });
    online.drop();
    await within(offline, 'last will');
    assert.ok(!controller.onlineProbes().includes('probe-status'));
  });

  it('sends a request on the cmd topic and resolves with the probe ack', async () => {
    const fake = await probe('probe-req');
    const accepted = controller.request('probe-req', { type: 'smtp', target: '127.0.0.1', port: 25 }, 'req-1');
    assert.deepEqual(await fake.nextCommand(), { reqId: 'req-1', payload: { type: 'smtp', target: '127.0.0.1', port: 25 } });
    await fake.ack({ req_id: 'req-1', accepted: true });
    assert.deepEqual(await within(accepted, 'ack'), { req_id: 'req-1', accepted: true });

    const rejected = controller.request('probe-req', { type: 'smtp', target: '10.0.0.1' }, 'req-2');
    await fake.ack({ req_id: 'req-2', accepted: false, reason: 'target-not-allowed', message: 'private' });
    assert.equal(((await within(rejected, 'rejection')) as { reason: string }).reason, 'target-not-allowed');
  });

  it('fails a request with ack-timeout when the probe never answers', async () => {
    await assert.rejects(controller.request('probe-nobody', { type: 'smtp', target: '127.0.0.1' }), { code: 'ack-timeout' });
  });

  it('bounds the requests awaiting an ack', async () => {
    const bounded = await Controller.start({ brokerUrl: broker.url, resultsFile: join(dir, 'bounded.jsonl'), protocolVersion: 4, maxPendingRequests: 1, ackTimeoutMs: 200 });
    try {
      const first = bounded.request('probe-nobody', { type: 'smtp', target: '127.0.0.1' });
      await assert.rejects(bounded.request('probe-nobody', { type: 'smtp', target: '127.0.0.1' }), { code: 'too-many-pending-requests' });
      await assert.rejects(first, { code: 'ack-timeout' });
    } finally {
      await bounded.close();
    }
  });

  it('fails to start with connect-failed when no broker listens', async () => {
    const [port] = await freeLoopbackPorts(1);
    await assert.rejects(Controller.start({ brokerUrl: `mqtt://127.0.0.1:${port}`, resultsFile: join(dir, 'none.jsonl'), protocolVersion: 4 }), { code: 'connect-failed' });
  });

  it('acks a result only after its line is in the file, and stores a resent result once', async () => {
    const fake = await probe('probe-res');
    const sent = result('probe-res', 'req-9', 'res-1');
    await fake.publish(sent);
    const acked = await fake.waitForResultAck('res-1');
    // The ack arrives after the fsync: the line must be readable right now.
    assert.deepEqual(acked, ['res-1']);
    assert.deepEqual(storedIds(file).filter((id) => id === 'res-1'), ['res-1']);

    await fake.publish(sent);
    const reacked = new Promise<string[]>((resolve) => {
      const onMessage = (topic: string, payload: Buffer): void => {
        if (topic !== topics.resultAck('probe-res')) return;
        fake.client.removeListener('message', onMessage);
        resolve((JSON.parse(payload.toString()) as ResultAck).result_ids);
      };
      fake.client.on('message', onMessage);
    });
    assert.deepEqual(await within(reacked, 'second result-ack'), ['res-1']);
    assert.deepEqual(storedIds(file).filter((id) => id === 'res-1'), ['res-1']);
    assert.ok(controller.counters.duplicates >= 1);
  });

  it('refuses bad results with a stable reason and never acks them', async () => {
    const fake = await probe('probe-bad');
    const refusals: Refusal[] = [];
    const onRefused = (refusal: Refusal): void => {
      if (refusal.probeId === 'probe-bad') refusals.push(refusal);
    };
    controller.on('refused', onRefused);
    await fake.publishRaw('req-b', '{not json');
    await fake.publishRaw('req-b', JSON.stringify({ result_id: 'no-fields', probe_id: 'probe-bad', req_id: 'req-b' }));
    await fake.publishRaw('req-b', JSON.stringify(result('probe-other', 'req-b', 'spoofed')));
    await fake.publishRaw('req-b', JSON.stringify(result('probe-bad', 'req-other', 'wrong-req')));
    await fake.publishRaw('req-b', JSON.stringify({ ...result('probe-bad', 'req-b', 'huge'), pad: 'x'.repeat(300 * 1024) }));
    // A good result after the bad ones: once it is acked, the bad ones were seen before it.
    await fake.publish(result('probe-bad', 'req-b', 'good'));
    await fake.waitForResultAck('good');
    controller.removeListener('refused', onRefused);
    assert.deepEqual(
      refusals.map((refusal) => refusal.reason),
      ['malformed-json', 'invalid-result', 'probe-id-mismatch', 'request-id-mismatch', 'payload-too-large'],
    );
    assert.deepEqual(fake.resultAcks.flat(), ['good']);
    const ids = storedIds(file);
    for (const id of ['no-fields', 'spoofed', 'wrong-req', 'huge']) assert.ok(!ids.includes(id), id);
  });

  it('after a restart, a result stored before is acked again but not stored twice', async () => {
    const fake = await probe('probe-restart');
    await fake.publish(result('probe-restart', 'req-r', 'before-restart'));
    await fake.waitForResultAck('before-restart');
    await controller.close();
    controller = await Controller.start({ brokerUrl: broker.url, resultsFile: file, protocolVersion: 4, ackTimeoutMs: 3_000 });
    fake.resultAcks.length = 0;
    const duplicate = new Promise<string>((resolve) => controller.once('duplicate', (_probe, id) => resolve(id)));
    await fake.publish(result('probe-restart', 'req-r', 'before-restart'));
    assert.equal(await within(duplicate, 'duplicate after restart'), 'before-restart');
    await fake.waitForResultAck('before-restart');
    assert.deepEqual(storedIds(file).filter((id) => id === 'before-restart'), ['before-restart']);
  });

  it('builds the table from the results it stored', async () => {
    const fake = await probe('probe-table');
    await fake.publish(result('probe-table', 'req-t', 'table-1', { dst_name: 'mx.table.test', ehlo: { code: 250, lines: ['x'], rt: 1, capabilities: {} }, findings: ['starttls-not-supported'] }));
    await fake.waitForResultAck('table-1');
    const rows = controller.table().filter((row) => row.target === 'mx.table.test:25');
    assert.deepEqual(rows.map((row) => [row.probe, row.starttls, row.stripped]), [['probe-table', 'no', false]]);
  });
});

describe('agent end to end over the embedded broker', () => {
  let broker: EmbeddedBroker;
  let dir: string;
  let controller: Controller;
  let peer: ScriptedPeer;
  let agent: AgentProcess;

  before(async () => {
    broker = await startEmbeddedBroker();
    dir = mkdtempSync(join(tmpdir(), 'smtp-probe-e2e-'));
    controller = await Controller.start({ brokerUrl: broker.url, resultsFile: join(dir, 'results.jsonl'), protocolVersion: 4 });
    peer = await startPeer(starttlsConversation(testCerts().valid));
    agent = await startAgentProcess(['--broker', broker.url, '--id', 'probe-e2e', '--data', join(dir, 'probe-e2e'), '--allow-private', '--mqtt-version', '4']);
  });

  after(async () => {
    try {
      await agent?.stop();
      await controller?.close();
      await peer?.close();
      await broker?.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the agent measures on request, the controller stores the result and acks it, the outbox empties', async () => {
    await agent.explain(controller.waitForProbes(['probe-e2e'], DEADLINE_MS));
    const stored = new Promise<PublishedResult>((resolve) => {
      const onStored = (published: PublishedResult): void => {
        if (published.req_id !== 'e2e-1') return;
        controller.removeListener('stored', onStored);
        resolve(published);
      };
      controller.on('stored', onStored);
    });
    const ack = await controller.request('probe-e2e', { type: 'smtp', target: '127.0.0.1', port: peer.port, timeout: 5_000 }, 'e2e-1');
    assert.deepEqual(ack, { req_id: 'e2e-1', accepted: true });
    const published = await agent.explain(within(stored, 'the result'));
    assert.equal(published.probe_id, 'probe-e2e');
    assert.equal(published.status, 'ok');
    assert.ok(published.ehlo && 'STARTTLS' in published.ehlo.capabilities);
    assert.ok(published.tls?.ver, 'TLS version recorded');
    assert.deepEqual(
      peer.clientLines().map((line) => line.text.split(' ')[0].toUpperCase()),
      ['EHLO', 'STARTTLS', 'EHLO', 'QUIT'],
    );
    assert.deepEqual(storedIds(join(dir, 'results.jsonl')), [published.result_id]);
    await until(() => outboxEmpty(join(dir, 'probe-e2e')), 'the agent to delete the acked result');
    assert.deepEqual(controller.table().map((row) => [row.probe, row.starttls, row.stripped]), [['probe-e2e', 'yes', false]]);
  });
});
