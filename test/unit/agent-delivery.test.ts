// Delivery from the outbox: only while connected, a bounded window of unacknowledged results,
// outbox order, a full replay after reconnecting, resending what the controller did not
// acknowledge, and the window freed when the outbox drops results.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Delivery } from '../../firmware/agent/delivery';
import { Outbox } from '../../firmware/agent/outbox';
import { waitFor } from '../helpers/agent-harness';

const dirs: string[] = [];
const deliveries: Delivery[] = [];
after(() => {
  for (const delivery of deliveries) delivery.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function setup(options: { window: number; resendMs: number }, limits = { maxBytes: 1_000_000, maxEntries: 1000 }) {
  const dir = mkdtempSync(join(tmpdir(), 'agent-delivery-'));
  dirs.push(dir);
  const outbox = await Outbox.open(dir, limits);
  const sent: string[] = [];
  const delivery = new Delivery(
    outbox,
    async (entry, payload) => {
      assert.equal(payload.toString(), entry.reqId);
      sent.push(entry.reqId);
    },
    options,
    () => undefined,
  );
  deliveries.push(delivery);
  let made = 0;
  const add = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const reqId = `r${made++}`;
      await outbox.append(reqId, randomUUID(), Buffer.from(reqId));
    }
    delivery.appended();
  };
  const idsOf = (reqIds: string[]): string[] => [...outbox.entries()].filter((entry) => reqIds.includes(entry.reqId)).map((entry) => entry.resultId);
  return { outbox, delivery, sent, add, idsOf };
}

/** Lets the pump's reads and sends run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

describe('delivery', () => {
  test('sends nothing while disconnected, then a window of results in outbox order', async () => {
    const { delivery, sent, add } = await setup({ window: 3, resendMs: 60_000 });
    await add(5);
    await settle();
    assert.deepEqual(sent, []);
    delivery.start();
    await waitFor(() => (sent.length === 3 ? true : undefined), 'a full window');
    await settle();
    assert.deepEqual(sent, ['r0', 'r1', 'r2']);
    assert.equal(delivery.depth(), 3);
    delivery.stop();
  });

  test('acknowledged results leave the outbox and make room for the next ones', async () => {
    const { delivery, sent, add, idsOf, outbox } = await setup({ window: 2, resendMs: 60_000 });
    await add(5);
    delivery.start();
    await waitFor(() => (sent.length === 2 ? true : undefined), 'a full window');
    await delivery.acknowledged(idsOf(['r0']));
    await waitFor(() => (sent.length === 3 ? true : undefined), 'one more');
    await settle();
    assert.deepEqual(sent, ['r0', 'r1', 'r2']);
    assert.equal(outbox.status().depth, 4);
    await delivery.acknowledged(idsOf(['r1', 'r2']));
    await waitFor(() => (sent.length === 5 ? true : undefined), 'the rest');
    await delivery.acknowledged(idsOf(['r3', 'r4']));
    await settle();
    assert.deepEqual(sent, ['r0', 'r1', 'r2', 'r3', 'r4']);
    assert.equal(outbox.status().depth, 0);
    assert.equal(delivery.depth(), 0);
    delivery.stop();
  });

  test('after a reconnect, everything not acknowledged goes out again from the oldest', async () => {
    const { delivery, sent, add } = await setup({ window: 10, resendMs: 60_000 });
    await add(3);
    delivery.start();
    await waitFor(() => (sent.length === 3 ? true : undefined), 'first connection');
    delivery.stop();
    await add(1);
    await settle();
    assert.equal(sent.length, 3);
    delivery.start();
    await waitFor(() => (sent.length === 7 ? true : undefined), 'replay');
    assert.deepEqual(sent.slice(3), ['r0', 'r1', 'r2', 'r3']);
    delivery.stop();
  });

  test('a result the controller does not acknowledge is sent again after resendMs', async () => {
    const { delivery, sent, add } = await setup({ window: 5, resendMs: 200 });
    await add(2);
    delivery.start();
    await waitFor(() => (sent.length === 2 ? true : undefined), 'first send');
    await waitFor(() => (sent.length >= 4 ? true : undefined), 'resend', 5000);
    assert.deepEqual(sent.slice(0, 4), ['r0', 'r1', 'r0', 'r1']);
    delivery.stop();
  });

  test('results the outbox dropped free their place in the window', async () => {
    const { delivery, sent, add, outbox } = await setup({ window: 2, resendMs: 60_000 }, { maxBytes: 1_000_000, maxEntries: 3 });
    await add(3);
    delivery.start();
    await waitFor(() => (sent.length === 2 ? true : undefined), 'a full window');
    await add(2);
    await waitFor(() => (sent.length === 4 ? true : undefined), 'the window freed by drops');
    assert.deepEqual(sent, ['r0', 'r1', 'r2', 'r3']);
    assert.equal(outbox.status().dropped, 2);
    delivery.stop();
  });
});
