// The durable outbox: order, reopening after a crash, removal on ack, and the byte and entry
// bounds (oldest dropped, counted, and the count kept across restarts).

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Outbox, type OutboxEntry } from '../../firmware/agent/outbox';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function freshDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'agent-outbox-'));
  dirs.push(dir);
  return dir;
}

const roomy = { maxBytes: 1024 * 1024, maxEntries: 1000 };

async function fill(outbox: Outbox, count: number, size = 10): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = randomUUID();
    ids.push(id);
    await outbox.append(`req-${i}`, id, Buffer.alloc(size, 48 + (i % 10)));
  }
  return ids;
}

function ids(outbox: Outbox): string[] {
  return [...outbox.entries()].map((entry: OutboxEntry) => entry.resultId);
}

describe('outbox', () => {
  test('keeps results in order and returns their bytes', async () => {
    const outbox = await Outbox.open(freshDir(), roomy);
    const first = await outbox.append('r1', randomUUID(), Buffer.from('{"a":1}'));
    const second = await outbox.append('r.2_x', randomUUID(), Buffer.from('{"b":2}'));
    assert.ok(first && second);
    assert.deepEqual(ids(outbox), [first.resultId, second.resultId]);
    assert.equal((await outbox.read(second))?.toString(), '{"b":2}');
    assert.equal(second.reqId, 'r.2_x');
    assert.deepEqual(outbox.status(), { depth: 2, bytes: 14, dropped: 0 });
  });

  test('appends made at once are all stored, in call order', async () => {
    const outbox = await Outbox.open(freshDir(), roomy);
    const made = Array.from({ length: 50 }, () => randomUUID());
    await Promise.all(made.map((id, i) => outbox.append(`r${i}`, id, Buffer.from(String(i)))));
    assert.deepEqual(ids(outbox), made);
  });

  test('reopening finds every result in order, and new ones follow', async () => {
    const dir = freshDir();
    const first = await Outbox.open(dir, roomy);
    const written = await fill(first, 25);
    await first.remove([written[3] as string]);
    // A crash mid-write leaves a temporary file: it is not a result.
    writeFileSync(join(dir, '26.tmp'), 'partial');
    const reopened = await Outbox.open(dir, roomy);
    const expected = written.filter((_, i) => i !== 3);
    assert.deepEqual(ids(reopened), expected);
    assert.equal(readdirSync(dir).some((name) => name.endsWith('.tmp')), false);
    const later = randomUUID();
    await reopened.append('r-late', later, Buffer.from('x'));
    assert.deepEqual(ids(await Outbox.open(dir, roomy)), [...expected, later]);
  });

  test('removes acknowledged results and ignores unknown ids', async () => {
    const outbox = await Outbox.open(freshDir(), roomy);
    const written = await fill(outbox, 5);
    assert.equal(await outbox.remove([written[0] as string, written[4] as string, 'unknown']), 2);
    assert.deepEqual(ids(outbox), written.slice(1, 4));
    assert.equal(outbox.has(written[0] as string), false);
    assert.equal(await outbox.read({ seq: 1, resultId: written[0] as string, reqId: 'req-0', bytes: 10 }), undefined);
  });

  test('when full by bytes, drops the oldest and counts them', async () => {
    const outbox = await Outbox.open(freshDir(), { maxBytes: 100, maxEntries: 1000 });
    const written = await fill(outbox, 10);
    assert.deepEqual(outbox.status(), { depth: 10, bytes: 100, dropped: 0 });
    const extra = await fill(outbox, 3, 25);
    assert.deepEqual(outbox.status(), { depth: 5, bytes: 95, dropped: 8 });
    assert.deepEqual(ids(outbox), [...written.slice(8), ...extra]);
  });

  test('when full by entries, drops the oldest and counts them', async () => {
    const outbox = await Outbox.open(freshDir(), { maxBytes: 1_000_000, maxEntries: 4 });
    const written = await fill(outbox, 7);
    assert.deepEqual(ids(outbox), written.slice(3));
    assert.equal(outbox.status().dropped, 3);
  });

  test('a batch of appends larger than the bounds keeps its newest and counts the rest', async () => {
    const outbox = await Outbox.open(freshDir(), { maxBytes: 1_000_000, maxEntries: 4 });
    const older = await fill(outbox, 2);
    const made = Array.from({ length: 7 }, () => randomUUID());
    const stored = await Promise.all(made.map((id, i) => outbox.append(`batch-${i}`, id, Buffer.from(String(i)))));
    assert.deepEqual(ids(outbox), made.slice(3));
    assert.deepEqual(stored.map((entry) => entry !== undefined), [false, false, false, true, true, true, true]);
    assert.equal(outbox.status().dropped, 3 + older.length);
  });

  test('a result larger than the whole outbox is counted as dropped, not stored', async () => {
    const outbox = await Outbox.open(freshDir(), { maxBytes: 50, maxEntries: 10 });
    const kept = await fill(outbox, 2);
    assert.equal(await outbox.append('huge', randomUUID(), Buffer.alloc(51)), undefined);
    assert.deepEqual(ids(outbox), kept);
    assert.equal(outbox.status().dropped, 1);
  });

  test('the dropped count survives a restart, and a smaller bound applies on open', async () => {
    const dir = freshDir();
    const first = await Outbox.open(dir, { maxBytes: 1000, maxEntries: 5 });
    const written = await fill(first, 8);
    assert.equal(first.status().dropped, 3);
    const reopened = await Outbox.open(dir, { maxBytes: 1000, maxEntries: 2 });
    assert.deepEqual(ids(reopened), written.slice(6));
    assert.equal(reopened.status().dropped, 6);
  });
});
