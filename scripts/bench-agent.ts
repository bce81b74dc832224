// Figures for issue 3's closing note (not a test; nothing here is asserted): how fast results
// move from a probe agent to the reference controller through a real Mosquitto with TLS client
// certificates, and how long a probe takes to drain a 10,000-result outbox after an outage.
//
//   tsx scripts/bench-agent.ts [--results N] [--window W]...
//
// The outage is staged: N results are put in the agent's outbox while nothing runs (as if the
// broker had been down while they were measured), then the agent (the built bundle, its own
// process) starts and the clock runs until the controller has stored all N, and until the
// agent has deleted all N on the controller's result-acks. Each result is a copy of one real
// measurement of the demo STARTTLS server (its certificate included), with a new result_id.

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Outbox } from '../firmware/agent/outbox';
import type { PublishedResult } from '../firmware/agent/protocol';
import { measure } from '../firmware/measure/driver';
import { type Mosquitto, mosquittoSkipReason, outboxEmpty, startAgentProcess, startMosquitto, until, within } from '../test/helpers/mosquitto';
import { Controller } from './controller';
import { demoCa, startStarttlsPeer } from './demo/peers';

const PROBE = 'probe-bench';
const CONTROLLER = 'controller-1';
const REQ_ID = 'bench';

interface Figures {
  window: number;
  results: number;
  payloadBytes: number;
  /** agent process start to the last result stored by the controller, ms */
  storedAllMs: number;
  /** first to last result stored, per second */
  resultsPerSecond: number;
  /** agent process start to an empty outbox (every result-ack processed), ms */
  drainedMs: number;
  duplicates: number;
}

async function sampleResult(): Promise<PublishedResult> {
  const peer = await startStarttlsPeer();
  try {
    const result = await measure({ target: peer.host, port: peer.port, sni: 'mx.demo.test', ca: [demoCa()], allowPrivate: true, timeoutMs: 10_000 });
    return { ...result, result_id: '', req_id: REQ_ID, probe_id: PROBE };
  } finally {
    await peer.close();
  }
}

async function run(broker: Mosquitto, sample: PublishedResult, count: number, window: number): Promise<Figures> {
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-bench-agent-'));
  try {
    const dataDir = join(dir, PROBE);
    const outbox = await Outbox.open(join(dataDir, 'outbox'), { maxBytes: 2 ** 34, maxEntries: count });
    let payloadBytes = 0;
    for (let index = 0; index < count; index += 1) {
      const resultId = randomUUID();
      const payload = Buffer.from(JSON.stringify({ ...sample, result_id: resultId }));
      payloadBytes = payload.length;
      await outbox.append(REQ_ID, resultId, payload);
    }

    const controller = await Controller.start({ brokerUrl: broker.url, resultsFile: join(dir, 'results.jsonl'), protocolVersion: 5, ...broker.tls(CONTROLLER) });
    let firstStoredAt = 0;
    let lastStoredAt = 0;
    const allStored = new Promise<void>((resolve) => {
      controller.on('stored', () => {
        lastStoredAt = performance.now();
        if (firstStoredAt === 0) firstStoredAt = lastStoredAt;
        if (controller.counters.stored === count) resolve();
      });
    });
    const startedAt = performance.now();
    const files = broker.certs.clients[PROBE];
    const agent = await startAgentProcess([
      '--broker', broker.url, '--id', PROBE, '--data', dataDir, '--ca', broker.certs.caFile, '--cert', files.certFile, '--key', files.keyFile,
      '--inflight-window', String(window), '--outbox-max-entries', String(count), '--outbox-max-bytes', String(2 ** 34),
    ]);
    try {
      await within(allStored, () => `${count} results stored (${controller.counters.stored} so far)`, 600_000);
      await until(() => outboxEmpty(dataDir), 'an empty outbox', 600_000);
      const drainedAt = performance.now();
      return {
        window,
        results: count,
        payloadBytes,
        storedAllMs: Math.round(lastStoredAt - startedAt),
        resultsPerSecond: Math.round((count - 1) / ((lastStoredAt - firstStoredAt) / 1000)),
        drainedMs: Math.round(drainedAt - startedAt),
        duplicates: controller.counters.duplicates,
      };
    } finally {
      await agent.stop();
      await controller.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { results: { type: 'string', default: '10000' }, window: { type: 'string', multiple: true } } });
  const count = Number(values.results);
  const windows = (values.window ?? ['20', '100']).map(Number);
  if (!Number.isInteger(count) || count < 2 || windows.some((window) => !Number.isInteger(window) || window < 1)) throw new Error('--results and --window take positive integers');
  const skipped = mosquittoSkipReason();
  if (skipped) throw new Error(skipped);
  const broker = await startMosquitto([PROBE, CONTROLLER]);
  try {
    const sample = await sampleResult();
    process.stdout.write(`Mosquitto ${broker.url} (TLS, client certificates, ACL); agent = built bundle on ${process.version}; controller MQTT 5, shared subscription, fsync per batch\n`);
    for (const window of windows) {
      const figures = await run(broker, sample, count, window);
      process.stdout.write(
        `window ${String(figures.window).padStart(4)}: ${figures.results} results of ${figures.payloadBytes} B: all stored ${figures.storedAllMs} ms after agent start, ` +
          `${figures.resultsPerSecond} results/s, outbox empty after ${figures.drainedMs} ms, duplicates ${figures.duplicates}\n`,
      );
    }
  } finally {
    await broker.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`bench-agent failed: ${error.message}\n`);
    process.exit(1);
  },
);
