// The durable outbox: every result is on disk before anyone is told about it, and leaves the
// disk only when the controller says it has stored it (DESIGN.md, "The MQTT link": PUBACK only
// means the broker has it). One file per result, named `{seq}_{result_id}_{req_id}.json`, so the
// order, the ids and the topic survive a SIGKILL without any index file: on start the folder
// listing is the outbox. Bounded in bytes and in entries; when a new result does not fit, the
// oldest are dropped and counted, and the count is kept on disk so it is reported across
// restarts, never lost silently.
//
// Group commit: results that arrive while a write is under way are written together, each file
// fsynced in parallel, renamed in order, and the folder fsynced once for the batch, so many
// concurrent measurements do not queue behind one fsync each.

import { mkdir, readdir, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { OutboxStatus } from './protocol';
import { fsyncDir, removeFile, writeFileDurable, writeFileSynced } from './durable';
import { REQUEST_ID_SOURCE } from './validate';

export interface OutboxEntry {
  readonly seq: number;
  readonly resultId: string;
  readonly reqId: string;
  /** payload size, what the byte bound counts */
  readonly bytes: number;
}

interface QueuedAppend {
  reqId: string;
  resultId: string;
  payload: Uint8Array;
  resolve: (entry: OutboxEntry | undefined) => void;
  reject: (error: unknown) => void;
}

export interface OutboxLimits {
  maxBytes: number;
  /** bounds the in-memory index as well as the folder */
  maxEntries: number;
}

const SEQ_DIGITS = 12;
const ENTRY_NAME = new RegExp(`^(\\d{${SEQ_DIGITS}})_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_(${REQUEST_ID_SOURCE})\\.json$`);
const STATE_FILE = 'state.json';
const TMP_SUFFIX = '.tmp';

function entryName(entry: OutboxEntry): string {
  return `${String(entry.seq).padStart(SEQ_DIGITS, '0')}_${entry.resultId}_${entry.reqId}.json`;
}

function parseState(text: string): number {
  const state: unknown = JSON.parse(text);
  const dropped = (state as { dropped?: unknown } | null)?.dropped;
  return typeof dropped === 'number' && Number.isSafeInteger(dropped) && dropped >= 0 ? dropped : 0;
}

export class Outbox {
  /** by result id, in sequence order (a Map iterates in insertion order) */
  private readonly index = new Map<string, OutboxEntry>();
  private totalBytes = 0;
  private droppedCount: number;
  private nextSeq: number;
  /** changes run one at a time so sequence order, the bounds and the drop count stay exact */
  private tail: Promise<unknown> = Promise.resolve();
  /** appends waiting for the next group commit */
  private queued: QueuedAppend[] = [];

  private constructor(
    readonly dir: string,
    private readonly limits: OutboxLimits,
    entries: OutboxEntry[],
    dropped: number,
  ) {
    for (const entry of entries) {
      this.index.set(entry.resultId, entry);
      this.totalBytes += entry.bytes;
    }
    this.droppedCount = dropped;
    this.nextSeq = (entries[entries.length - 1]?.seq ?? 0) + 1;
  }

  /** Opens (or creates) the outbox in `dir`, removing temporary files a crash left behind. */
  static async open(dir: string, limits: OutboxLimits): Promise<Outbox> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const entries: OutboxEntry[] = [];
    let dropped = 0;
    for (const name of await readdir(dir)) {
      if (name.endsWith(TMP_SUFFIX)) {
        await removeFile(join(dir, name));
        continue;
      }
      if (name === STATE_FILE) {
        dropped = parseState(await readFile(join(dir, name), 'utf8'));
        continue;
      }
      const match = ENTRY_NAME.exec(name);
      if (!match) continue;
      const { size } = await stat(join(dir, name));
      entries.push({ seq: Number(match[1]), resultId: match[2] as string, reqId: match[3] as string, bytes: size });
    }
    entries.sort((a, b) => a.seq - b.seq);
    const outbox = new Outbox(dir, limits, entries, dropped);
    // A smaller bound than the last run's applies at once.
    await outbox.exclusive(() => outbox.makeRoom(0, 0));
    return outbox;
  }

  /**
   * Stores one result durably. Resolves with its entry once it is on disk; resolves undefined
   * when it cannot fit even in an empty outbox (then it is counted as dropped).
   */
  append(reqId: string, resultId: string, payload: Uint8Array): Promise<OutboxEntry | undefined> {
    return new Promise((resolve, reject) => {
      this.queued.push({ reqId, resultId, payload, resolve, reject });
      if (this.queued.length === 1) void this.exclusive(() => this.commitQueued());
    });
  }

  /** The stored payload, or undefined when the entry has been removed meanwhile. */
  async read(entry: OutboxEntry): Promise<Buffer | undefined> {
    try {
      return await readFile(join(this.dir, entryName(entry)));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  /**
   * Removes acknowledged results; unknown ids are ignored. The folder is not fsynced: if a
   * removal is lost in a crash the result is sent again, and the controller deduplicates by
   * result_id.
   */
  remove(resultIds: Iterable<string>): Promise<number> {
    return this.exclusive(async () => {
      let removed = 0;
      for (const resultId of resultIds) {
        const entry = this.index.get(resultId);
        if (!entry) continue;
        await this.unlinkEntry(entry);
        removed++;
      }
      return removed;
    });
  }

  has(resultId: string): boolean {
    return this.index.has(resultId);
  }

  /** Entries oldest first. Safe to iterate while entries are added or removed. */
  entries(): IterableIterator<OutboxEntry> {
    return this.index.values();
  }

  status(): OutboxStatus {
    return { depth: this.index.size, bytes: this.totalBytes, dropped: this.droppedCount };
  }

  /** Resolves when every change started so far is on disk. */
  async flush(): Promise<void> {
    await this.exclusive(async () => undefined);
  }

  /** Writes every queued append as one batch, in arrival order. */
  private async commitQueued(): Promise<void> {
    const batch = this.queued;
    this.queued = [];
    try {
      const fitting = await this.dropUnfitting(batch);
      await this.makeRoom(
        fitting.reduce((sum, item) => sum + item.payload.byteLength, 0),
        fitting.length,
      );
      const entries = fitting.map((item): OutboxEntry => ({ seq: this.nextSeq++, resultId: item.resultId, reqId: item.reqId, bytes: item.payload.byteLength }));
      await Promise.all(entries.map((entry, i) => writeFileSynced(join(this.dir, `${entry.seq}${TMP_SUFFIX}`), (fitting[i] as QueuedAppend).payload)));
      for (const entry of entries) await rename(join(this.dir, `${entry.seq}${TMP_SUFFIX}`), join(this.dir, entryName(entry)));
      await fsyncDir(this.dir);
      entries.forEach((entry, i) => {
        this.index.set(entry.resultId, entry);
        this.totalBytes += entry.bytes;
        (fitting[i] as QueuedAppend).resolve(entry);
      });
    } catch (error) {
      for (const item of batch) item.reject(error);
    }
  }

  /**
   * Results that cannot fit even in an empty outbox (too large alone, or beyond the bounds with
   * the newer ones of the same batch) are dropped and counted; the rest are returned.
   */
  private async dropUnfitting(batch: QueuedAppend[]): Promise<QueuedAppend[]> {
    const fitting: QueuedAppend[] = [];
    let bytes = 0;
    // Newest first: when the batch itself is too much, its oldest go, as in the outbox.
    for (const item of [...batch].reverse()) {
      const size = item.payload.byteLength;
      if (bytes + size <= this.limits.maxBytes && fitting.length < this.limits.maxEntries) {
        fitting.unshift(item);
        bytes += size;
      }
    }
    const unfitting = batch.filter((item) => !fitting.includes(item));
    if (unfitting.length > 0) {
      await this.recordDropped(unfitting.length);
      for (const item of unfitting) item.resolve(undefined);
    }
    return fitting;
  }

  private exclusive<T>(change: () => Promise<T>): Promise<T> {
    const run = this.tail.then(change);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Drops the oldest entries until `incomingBytes` more bytes and `incomingEntries` more entries fit. */
  private async makeRoom(incomingBytes: number, incomingEntries: number): Promise<void> {
    const victims: OutboxEntry[] = [];
    let bytes = this.totalBytes;
    let count = this.index.size;
    for (const entry of this.index.values()) {
      if (bytes + incomingBytes <= this.limits.maxBytes && count + incomingEntries <= this.limits.maxEntries) break;
      victims.push(entry);
      bytes -= entry.bytes;
      count--;
    }
    if (victims.length === 0) return;
    // The count is on disk before the results go: a crash in between over-counts, never hides.
    await this.recordDropped(victims.length);
    for (const entry of victims) await this.unlinkEntry(entry);
  }

  private async recordDropped(count: number): Promise<void> {
    this.droppedCount += count;
    await writeFileDurable(this.dir, STATE_FILE, JSON.stringify({ dropped: this.droppedCount }));
  }

  private async unlinkEntry(entry: OutboxEntry): Promise<void> {
    await removeFile(join(this.dir, entryName(entry)));
    this.index.delete(entry.resultId);
    this.totalBytes -= entry.bytes;
  }
}
