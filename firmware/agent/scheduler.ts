// Runs accepted requests: one-offs once (at start_time when given), periodic ones every
// `interval` seconds from start_time (or acceptance) until stop_time, each run delayed by a
// random 0..`spread` seconds so a fleet does not hit a server in the same second (Atlas
// semantics). A global concurrency limit and a per-target token bucket bound what the probe
// does to the network; memory pressure holds runs back.
//
// Bounds: at most `maxOneOffs` one-off and `maxPeriodic` periodic requests are held, and each
// holds at most one run waiting or running, so the waiting queue can never exceed their sum.
// A periodic slot that comes due while the previous run is still pending is skipped and
// counted, never queued behind it.

import { TokenBucket } from './bucket';
import type { MeasurementRequest } from './protocol';

export interface ScheduledRequest {
  reqId: string;
  request: MeasurementRequest;
  /** Unix ms when the probe accepted it; periodic slots count from here without start_time */
  acceptedAt: number;
}

export interface SchedulerLimits {
  maxConcurrent: number;
  maxOneOffs: number;
  maxPeriodic: number;
  /** runs a target may get in a burst */
  targetBurst: number;
  /** one more run per target every so many ms */
  targetRefillMs: number;
  /** how long to hold runs back before looking at memory again */
  pressureRetryMs: number;
}

export const DEFAULT_SCHEDULER_LIMITS: SchedulerLimits = {
  maxConcurrent: 10,
  maxOneOffs: 100,
  maxPeriodic: 100,
  targetBurst: 2,
  targetRefillMs: 10_000,
  pressureRetryMs: 1000,
};

/** `interrupted`: the run was aborted at shutdown and stored nothing; a one-off runs again on restart. */
export type RunOutcome = 'done' | 'interrupted';

export interface SchedulerHooks {
  /** measures and stores the result; must not reject */
  run(job: ScheduledRequest, signal: AbortSignal): Promise<RunOutcome>;
  /** the request has nothing more to run: a one-off ran, or a periodic one passed stop_time */
  finished(job: ScheduledRequest): void;
  /** false while the agent is near its memory budget */
  canStart(): boolean;
}

/** Wall-clock time and timers, replaceable so tests run the schedule without waiting. */
export interface Clock {
  /** Unix ms */
  now(): number;
  /** calls `callback` after `ms`; returns what cancels it */
  after(ms: number, callback: () => void): () => void;
}

const systemClock: Clock = {
  now: () => Date.now(),
  after: (ms, callback) => {
    const timer = setTimeout(callback, ms);
    return () => clearTimeout(timer);
  },
};

const NOTHING_TO_CANCEL = (): void => undefined;

export interface SchedulerDepths {
  running: number;
  waiting: number;
  periodic: number;
  /** periodic slots not run: the previous run was still pending */
  skipped: number;
}

interface Held {
  job: ScheduledRequest;
  periodic: boolean;
  cancelTimer: () => void;
  /** a run of it is waiting or running */
  pending: boolean;
}

export class Scheduler {
  private readonly held = new Map<string, Held>();
  private readonly waiting: Held[] = [];
  private readonly running = new Map<Promise<RunOutcome>, AbortController>();
  private readonly buckets = new Map<string, TokenBucket>();
  private oneOffs = 0;
  private periodicCount = 0;
  private skipped = 0;
  private cancelDispatch = NOTHING_TO_CANCEL;
  private closed = false;

  constructor(
    private readonly limits: SchedulerLimits,
    private readonly hooks: SchedulerHooks,
    private readonly random: () => number = Math.random,
    private readonly clock: Clock = systemClock,
  ) {}

  /** True when one more request of this kind would fit. */
  hasRoom(request: MeasurementRequest): boolean {
    return request.interval === undefined ? this.oneOffs < this.limits.maxOneOffs : this.periodicCount < this.limits.maxPeriodic;
  }

  has(reqId: string): boolean {
    return this.held.has(reqId);
  }

  /** Takes a request; the caller checked `hasRoom` and that the id is new. */
  add(job: ScheduledRequest): void {
    if (this.closed || this.held.has(job.reqId) || !this.hasRoom(job.request)) throw new Error('scheduler cannot take this request');
    const periodic = job.request.interval !== undefined;
    const held: Held = { job, periodic, cancelTimer: NOTHING_TO_CANCEL, pending: false };
    this.held.set(job.reqId, held);
    if (periodic) {
      this.periodicCount++;
      this.schedulePeriodic(held, this.firstSlot(job));
    } else {
      this.oneOffs++;
      const start = Math.max(this.clock.now(), (job.request.start_time ?? 0) * 1000);
      this.arm(held, start + this.spreadMs(job.request), () => this.enqueue(held));
    }
  }

  /** Drops a held request; a run already started finishes. False if it is not held. */
  stop(reqId: string): boolean {
    const held = this.held.get(reqId);
    if (!held) return false;
    this.release(held);
    const index = this.waiting.indexOf(held);
    if (index >= 0) this.waiting.splice(index, 1);
    return true;
  }

  depths(): SchedulerDepths {
    return { running: this.running.size, waiting: this.waiting.length, periodic: this.periodicCount, skipped: this.skipped };
  }

  /**
   * Stops all timers, gives running measurements `graceMs` to finish, then aborts the rest,
   * and resolves when every run has ended.
   */
  async close(graceMs: number): Promise<void> {
    this.closed = true;
    this.cancelDispatch();
    for (const held of this.held.values()) held.cancelTimer();
    const cancelAbort = this.clock.after(graceMs, () => {
      for (const controller of this.running.values()) controller.abort();
    });
    await Promise.all(this.running.keys());
    cancelAbort();
  }

  private firstSlot(job: ScheduledRequest): number {
    const interval = (job.request.interval as number) * 1000;
    const start = job.request.start_time !== undefined ? job.request.start_time * 1000 : job.acceptedAt;
    const now = this.clock.now();
    return now <= start ? start : start + Math.ceil((now - start) / interval) * interval;
  }

  private schedulePeriodic(held: Held, slot: number): void {
    const { request } = held.job;
    if (request.stop_time !== undefined && slot > request.stop_time * 1000) {
      this.release(held);
      this.hooks.finished(held.job);
      return;
    }
    this.arm(held, slot + this.spreadMs(request), () => {
      if (held.pending) this.skipped++;
      else this.enqueue(held);
      this.schedulePeriodic(held, slot + (request.interval as number) * 1000);
    });
  }

  private spreadMs(request: MeasurementRequest): number {
    return Math.floor(this.random() * (request.spread ?? 0) * 1000);
  }

  private arm(held: Held, at: number, fire: () => void): void {
    held.cancelTimer = this.clock.after(Math.max(0, at - this.clock.now()), () => {
      held.cancelTimer = NOTHING_TO_CANCEL;
      if (!this.closed) fire();
    });
  }

  private release(held: Held): void {
    held.cancelTimer();
    this.held.delete(held.job.reqId);
    if (held.periodic) this.periodicCount--;
    else this.oneOffs--;
  }

  private enqueue(held: Held): void {
    held.pending = true;
    this.waiting.push(held);
    this.dispatch();
  }

  private dispatch(): void {
    this.cancelDispatch();
    this.cancelDispatch = NOTHING_TO_CANCEL;
    let wakeAt = Infinity;
    while (!this.closed && this.running.size < this.limits.maxConcurrent && this.waiting.length > 0) {
      if (!this.hooks.canStart()) {
        wakeAt = this.clock.now() + this.limits.pressureRetryMs;
        break;
      }
      const now = this.clock.now();
      const index = this.waiting.findIndex((held) => this.bucket(held.job.request, now).available(now) >= 1);
      if (index < 0) {
        for (const held of this.waiting) wakeAt = Math.min(wakeAt, this.bucket(held.job.request, now).nextTokenAt(now));
        break;
      }
      const [held] = this.waiting.splice(index, 1) as [Held];
      this.bucket(held.job.request, now).take(now);
      this.forgetFullBuckets(now);
      this.start(held);
    }
    if (wakeAt !== Infinity && !this.closed) this.cancelDispatch = this.clock.after(Math.max(0, wakeAt - this.clock.now()), () => this.dispatch());
  }

  private start(held: Held): void {
    const controller = new AbortController();
    const run = this.hooks.run(held.job, controller.signal).then((outcome) => {
      this.running.delete(run);
      held.pending = false;
      if (outcome === 'done' && !held.periodic && this.held.get(held.job.reqId) === held) {
        this.release(held);
        this.hooks.finished(held.job);
      }
      this.dispatch();
      return outcome;
    });
    this.running.set(run, controller);
  }

  /** The target's bucket, made full when the target has none. */
  private bucket(request: MeasurementRequest, now: number): TokenBucket {
    const key = request.target.toLowerCase().replace(/\.$/, '');
    let bucket = this.buckets.get(key);
    if (!bucket) {
      bucket = new TokenBucket(this.limits.targetBurst, this.limits.targetRefillMs, now);
      this.buckets.set(key, bucket);
    }
    return bucket;
  }

  /** A full bucket is the same as none: dropping them keeps the map to targets measured recently. */
  private forgetFullBuckets(now: number): void {
    for (const [key, bucket] of this.buckets) {
      if (bucket.full(now)) this.buckets.delete(key);
    }
  }
}
