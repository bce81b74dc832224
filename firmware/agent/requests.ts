// Accepted requests are kept on disk until they have nothing more to run, so an agent that is
// killed or updated picks its periodic measurements and its pending one-offs up again: the
// controller was told "accepted" and expects results. One file per request, written before the
// accepted ack is sent. Also the memory of recent request ids, which tells a QoS 1 redelivery
// (same id, same bytes: the same ack again) from a reused id (same id, other bytes: rejected).

import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ack } from './protocol';
import type { ScheduledRequest } from './scheduler';
import { removeFile, writeFileDurable } from './durable';
import { REQUEST_ID_SOURCE } from './validate';

const REQUEST_FILE = new RegExp(`^(${REQUEST_ID_SOURCE})\\.req\\.json$`);
const TMP_SUFFIX = '.tmp';

/** What a request file holds: the request's own payload bytes and when it was accepted. */
export interface StoredRequest {
  reqId: string;
  acceptedAt: number;
  payload: Buffer;
}

export function payloadDigest(payload: Uint8Array): string {
  return createHash('sha256').update(payload).digest('base64');
}

function parseRecord(text: string): { acceptedAt: number; payload: Buffer } | undefined {
  try {
    const { accepted_at: acceptedAt, payload } = JSON.parse(text) as { accepted_at?: unknown; payload?: unknown };
    if (typeof acceptedAt !== 'number' || typeof payload !== 'string') return undefined;
    return { acceptedAt, payload: Buffer.from(payload, 'base64') };
  } catch {
    return undefined;
  }
}

export class RequestStore {
  private constructor(readonly dir: string) {}

  static async open(dir: string): Promise<RequestStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return new RequestStore(dir);
  }

  /**
   * Every stored request; the caller validates each payload again under today's settings.
   * Files that cannot be read as a request record are removed and counted.
   */
  async load(): Promise<{ stored: StoredRequest[]; unreadable: number }> {
    const stored: StoredRequest[] = [];
    let unreadable = 0;
    for (const name of await readdir(this.dir)) {
      if (name.endsWith(TMP_SUFFIX)) {
        await removeFile(join(this.dir, name));
        continue;
      }
      const match = REQUEST_FILE.exec(name);
      if (!match) continue;
      const record = parseRecord(await readFile(join(this.dir, name), 'utf8'));
      if (!record) {
        unreadable++;
        await removeFile(join(this.dir, name));
        continue;
      }
      stored.push({ reqId: match[1] as string, ...record });
    }
    return { stored: stored.sort((a, b) => a.acceptedAt - b.acceptedAt), unreadable };
  }

  async save(job: ScheduledRequest, payload: Uint8Array): Promise<void> {
    const record = { accepted_at: job.acceptedAt, payload: Buffer.from(payload).toString('base64') };
    await writeFileDurable(this.dir, `${job.reqId}.req.json`, JSON.stringify(record), `${job.reqId}.req${TMP_SUFFIX}`);
  }

  async remove(reqId: string): Promise<void> {
    await removeFile(join(this.dir, `${reqId}.req.json`));
  }
}

/** The last `capacity` request ids with their payload digest and the ack they got, oldest evicted first. */
export class RecentRequests {
  private readonly seen = new Map<string, { digest: string; ack: Ack }>();

  constructor(private readonly capacity: number) {}

  get(reqId: string): { digest: string; ack: Ack } | undefined {
    return this.seen.get(reqId);
  }

  remember(reqId: string, digest: string, ack: Ack): void {
    this.seen.delete(reqId);
    this.seen.set(reqId, { digest, ack });
    if (this.seen.size > this.capacity) this.seen.delete(this.seen.keys().next().value as string);
  }
}
