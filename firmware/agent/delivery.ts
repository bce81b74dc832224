// Moves results from the durable outbox to the broker. Only while connected, and only a bounded
// window of results is out at a time: a result stays in the window from its publish until the
// controller's result-ack removes it from the outbox (PUBACK alone means the broker has it, not
// that a controller stored it; Mosquitto even PUBACKs with reason 16 when nobody listens). A
// result not acknowledged within `resendMs` is published again, so results parked at a broker
// without a listening controller are not stuck forever; the controller deduplicates by
// result_id. Publishing follows outbox order, so a replay after an outage is in order.

import type { Log } from './log';
import type { Outbox, OutboxEntry } from './outbox';

export interface DeliveryOptions {
  window: number;
  resendMs: number;
}

export type Send = (entry: OutboxEntry, payload: Buffer) => Promise<void>;

export class Delivery {
  /** result id -> when it was last published, in first-publish order */
  private readonly inflight = new Map<string, number>();
  private active = false;
  private pumping = false;
  private pumpAgain = false;
  private resendTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly outbox: Outbox,
    private readonly send: Send,
    private readonly options: DeliveryOptions,
    private readonly log: Log,
  ) {}

  /** The link is up: everything not yet acknowledged goes out again, oldest first. */
  start(): void {
    this.active = true;
    this.inflight.clear();
    clearInterval(this.resendTimer);
    this.resendTimer = setInterval(() => this.resendOverdue(), Math.max(100, Math.floor(this.options.resendMs / 4)));
    void this.pump();
  }

  /** The link is down: nothing is in flight any more. */
  stop(): void {
    this.active = false;
    this.inflight.clear();
    clearInterval(this.resendTimer);
    this.resendTimer = undefined;
  }

  /** A new result is in the outbox. */
  appended(): void {
    void this.pump();
  }

  /** The controller stored these results: they leave the outbox and the window. */
  async acknowledged(resultIds: string[]): Promise<void> {
    await this.outbox.remove(resultIds);
    for (const id of resultIds) this.inflight.delete(id);
    void this.pump();
  }

  depth(): number {
    return this.inflight.size;
  }

  /** One pump at a time, reading entries in order; a request to pump while pumping loops once more. */
  private async pump(): Promise<void> {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        this.forgetDropped();
        for (const entry of this.outbox.entries()) {
          if (!this.active || this.inflight.size >= this.options.window) break;
          if (this.inflight.has(entry.resultId)) continue;
          await this.publish(entry);
        }
      } while (this.pumpAgain && this.active);
    } finally {
      this.pumping = false;
    }
  }

  private async publish(entry: OutboxEntry): Promise<void> {
    const payload = await this.outbox.read(entry);
    if (!payload || !this.active) return;
    this.inflight.set(entry.resultId, Date.now());
    this.send(entry, payload).catch((error: unknown) => {
      this.log('result-publish-failed', { result_id: entry.resultId, code: String((error as { code?: unknown }).code ?? 'error') });
    });
  }

  /** Results the outbox dropped (it was full) no longer hold a place in the window. */
  private forgetDropped(): void {
    for (const id of this.inflight.keys()) {
      if (!this.outbox.has(id)) this.inflight.delete(id);
    }
  }

  private resendOverdue(): void {
    const due = Date.now() - this.options.resendMs;
    const overdue = [...this.inflight].filter(([, sentAt]) => sentAt <= due).map(([id]) => id);
    if (overdue.length === 0) return;
    for (const id of overdue) this.inflight.delete(id);
    this.log('results-resent', { count: overdue.length });
    void this.pump();
  }
}
