// The controller's result store: one JSON object per line in an append-only file. A result is
// acknowledged to its probe only after its line is on disk (write + fsync), because the
// probe deletes it from its outbox on that acknowledgement (DESIGN.md, principle 4). Probes
// resend results whose acknowledgement they missed, so the store remembers the ids it holds
// (a bounded set, most recent kept, reloaded from the file at start) and stores each once.
// An id is the pair (probe_id, result_id): a probe can only ever repeat its own results, so a
// probe that sends another probe's result_id cannot make the store drop that probe's result.

import { createReadStream } from 'node:fs';
import { type FileHandle, open, stat, truncate } from 'node:fs/promises';
import { createInterface } from 'node:readline';

export const DEFAULT_REMEMBERED_IDS = 200_000;

export interface StoredRecord {
  probe_id: string;
  result_id: string;
  [field: string]: unknown;
}

/** Identifies one stored result: which probe made it, and its id there. */
export interface ResultKey {
  probe_id: string;
  result_id: string;
}

function keyOf(record: ResultKey): string {
  return `${record.probe_id}/${record.result_id}`;
}

/** Insertion-ordered set of ids that forgets the oldest beyond `limit`. */
export class BoundedIdSet {
  private readonly ids = new Set<string>();

  constructor(private readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError('limit must be a positive integer');
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  add(id: string): void {
    if (this.ids.has(id)) return;
    this.ids.add(id);
    if (this.ids.size > this.limit) {
      const oldest = this.ids.values().next().value as string;
      this.ids.delete(oldest);
    }
  }

  get size(): number {
    return this.ids.size;
  }
}

export interface StoreOutcome {
  /** records written by this call */
  stored: StoredRecord[];
  /** records already in the store (still to be acknowledged: the probe sent them again) */
  duplicates: StoredRecord[];
}

/**
 * Cuts a torn last line (a crash between write and fsync leaves one): such a record was never
 * acknowledged, so its probe sends it again, and appending after it would corrupt the next line.
 */
async function cutTornTail(path: string): Promise<void> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (size === 0) return;
  const handle = await open(path, 'r');
  try {
    const chunk = 64 * 1024;
    let end = size;
    while (end > 0) {
      const start = Math.max(0, end - chunk);
      const buffer = Buffer.alloc(end - start);
      await handle.read(buffer, 0, buffer.length, start);
      if (end === size && buffer[buffer.length - 1] === 0x0a) return;
      const newline = buffer.lastIndexOf(0x0a);
      if (newline >= 0) {
        await truncate(path, start + newline + 1);
        return;
      }
      end = start;
    }
    await truncate(path, 0);
  } finally {
    await handle.close();
  }
}

export class ResultStore {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly known: BoundedIdSet,
  ) {}

  /** Opens (creating) the file, repairs a torn last line and reloads the most recent ids. */
  static async open(path: string, rememberedIds = DEFAULT_REMEMBERED_IDS): Promise<ResultStore> {
    await cutTornTail(path);
    const known = new BoundedIdSet(rememberedIds);
    for await (const record of ResultStore.read(path)) known.add(keyOf(record));
    return new ResultStore(path, await open(path, 'a'), known);
  }

  /** The stored records, in the order they were stored; lines that do not parse are skipped. */
  static async *read(path: string): AsyncGenerator<StoredRecord> {
    let input;
    try {
      await stat(path);
      input = createReadStream(path, { encoding: 'utf8' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    const lines = createInterface({ input, crlfDelay: Infinity });
    for await (const line of lines) {
      if (line === '') continue;
      let record: unknown;
      try {
        record = JSON.parse(line);
      } catch {
        continue;
      }
      if (typeof record !== 'object' || record === null) continue;
      const { probe_id: probeId, result_id: resultId } = record as Partial<StoredRecord>;
      if (typeof probeId === 'string' && typeof resultId === 'string') yield record as StoredRecord;
    }
  }

  has(key: ResultKey): boolean {
    return this.known.has(keyOf(key));
  }

  get rememberedIds(): number {
    return this.known.size;
  }

  /**
   * Appends the records not stored yet in one write and one fsync. Callers must not run two
   * `append`s at once (the controller serialises them), so that the id set and the file agree.
   */
  async append(records: StoredRecord[]): Promise<StoreOutcome> {
    const stored: StoredRecord[] = [];
    const duplicates: StoredRecord[] = [];
    const batch = new Set<string>();
    let text = '';
    for (const record of records) {
      const key = keyOf(record);
      if (this.known.has(key) || batch.has(key)) {
        duplicates.push(record);
        continue;
      }
      batch.add(key);
      stored.push(record);
      text += JSON.stringify(record) + '\n';
    }
    if (text !== '') {
      await this.handle.appendFile(text, 'utf8');
      await this.handle.sync();
      for (const key of batch) this.known.add(key);
    }
    return { stored, duplicates };
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
