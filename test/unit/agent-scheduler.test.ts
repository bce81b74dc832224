// The scheduler under a manual clock: one-off and periodic runs, spread, start and stop times,
// the concurrency limit, the per-target rate limit, skipped slots, memory pressure and close.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MeasurementRequest } from '../../firmware/agent/protocol';
import { type Clock, DEFAULT_SCHEDULER_LIMITS, type RunOutcome, Scheduler, type SchedulerLimits } from '../../firmware/agent/scheduler';

const T0 = 1_800_000_000_000;

/** A clock that moves only when told, firing due timers in time order. */
class ManualClock implements Clock {
  time = T0;
  private timers: Array<{ at: number; order: number; callback: () => void; cancelled: boolean }> = [];
  private made = 0;

  now(): number {
    return this.time;
  }

  after(ms: number, callback: () => void): () => void {
    const timer = { at: this.time + Math.max(0, ms), order: this.made++, callback, cancelled: false };
    this.timers.push(timer);
    return () => {
      timer.cancelled = true;
    };
  }

  /** Moves time forward by `ms`, firing each due timer at its own time, and lets promise callbacks run. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    await settle();
    for (;;) {
      this.timers = this.timers.filter((timer) => !timer.cancelled);
      const next = this.timers.filter((timer) => timer.at <= end).sort((a, b) => a.at - b.at || a.order - b.order)[0];
      if (!next) break;
      this.timers.splice(this.timers.indexOf(next), 1);
      this.time = next.at;
      next.callback();
      await settle();
    }
    this.time = end;
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

interface Run {
  reqId: string;
  at: number;
  signal: AbortSignal;
  finish: (outcome?: RunOutcome) => void;
}

let clock = new ManualClock();

function harness(limits: Partial<SchedulerLimits> = {}, random = () => 0) {
  clock = new ManualClock();
  const runs: Run[] = [];
  const finished: string[] = [];
  let canStart = true;
  const scheduler = new Scheduler(
    { ...DEFAULT_SCHEDULER_LIMITS, targetBurst: 100, targetRefillMs: 1, ...limits },
    {
      run: (job, signal) =>
        new Promise<RunOutcome>((resolve) => {
          runs.push({ reqId: job.reqId, at: clock.now() - T0, signal, finish: (outcome = 'done') => resolve(outcome) });
        }),
      finished: (job) => finished.push(job.reqId),
      canStart: () => canStart,
    },
    random,
    clock,
  );
  const add = (reqId: string, request: Partial<MeasurementRequest> = {}): void =>
    scheduler.add({ reqId, request: { type: 'smtp', target: `${reqId}.example`, ...request }, acceptedAt: clock.now() });
  return {
    scheduler,
    runs,
    finished,
    add,
    setCanStart: (value: boolean) => {
      canStart = value;
    },
  };
}

function tick(ms: number): Promise<void> {
  return clock.advance(ms);
}

async function finishAll(runs: Run[]): Promise<void> {
  for (const run of runs) run.finish();
  await tick(0);
}

describe('scheduler', () => {
  test('runs a one-off at once, then calls it finished', async () => {
    const { runs, finished, add, scheduler } = harness();
    add('a');
    await tick(0);
    assert.deepEqual(runs.map((run) => run.reqId), ['a']);
    assert.deepEqual(scheduler.depths(), { running: 1, waiting: 0, periodic: 0, skipped: 0 });
    await finishAll(runs);
    assert.deepEqual(finished, ['a']);
    assert.equal(scheduler.has('a'), false);
  });

  test('holds a one-off until its start time, delayed by its spread', async () => {
    const { runs, add } = harness({}, () => 0.5);
    add('a', { start_time: T0 / 1000 + 100, spread: 20 });
    await tick(109_999);
    assert.equal(runs.length, 0);
    await tick(1);
    assert.deepEqual(runs.map((run) => run.at), [110_000]);
  });

  test('never runs more than the concurrency limit', async () => {
    const { runs, finished, add, scheduler } = harness({ maxConcurrent: 2 });
    for (const id of ['a', 'b', 'c', 'd', 'e']) add(id);
    await tick(0);
    assert.equal(runs.length, 2);
    assert.deepEqual(scheduler.depths(), { running: 2, waiting: 3, periodic: 0, skipped: 0 });
    runs[0]?.finish();
    await tick(0);
    assert.equal(runs.length, 3);
    assert.equal(scheduler.depths().running, 2);
    await finishAll(runs);
    await finishAll(runs);
    assert.deepEqual(finished.sort(), ['a', 'b', 'c', 'd', 'e']);
  });

  test('limits runs per target, and other targets go ahead meanwhile', async () => {
    const { runs, add } = harness({ targetBurst: 1, targetRefillMs: 10_000 });
    add('a', { target: 'mx.example' });
    add('b', { target: 'MX.example.' });
    add('c', { target: 'other.example' });
    add('d', { target: 'mx.example' });
    await tick(0);
    assert.deepEqual(runs.map((run) => [run.reqId, run.at]), [['a', 0], ['c', 0]]);
    await finishAll(runs);
    await tick(9_999);
    assert.equal(runs.length, 2);
    await tick(1);
    await tick(10_000);
    assert.deepEqual(runs.map((run) => [run.reqId, run.at]), [['a', 0], ['c', 0], ['b', 10_000], ['d', 20_000]]);
  });

  test('runs a periodic request every interval until its stop time', async () => {
    const { runs, finished, add, scheduler } = harness();
    add('p', { interval: 60, stop_time: T0 / 1000 + 150 });
    assert.equal(scheduler.depths().periodic, 1);
    for (let i = 0; i < 4; i++) {
      await tick(i === 0 ? 0 : 60_000);
      await finishAll(runs);
    }
    assert.deepEqual(runs.map((run) => run.at), [0, 60_000, 120_000]);
    assert.deepEqual(finished, ['p']);
    assert.equal(scheduler.depths().periodic, 0);
  });

  test('spreads periodic runs within the slot, and counts from start_time', async () => {
    const { runs, add } = harness({}, () => 0.25);
    add('p', { interval: 100, spread: 40, start_time: T0 / 1000 + 50 });
    await tick(60_000);
    await finishAll(runs);
    await tick(100_000);
    assert.deepEqual(runs.map((run) => run.at), [60_000, 160_000]);
  });

  test('a periodic request restored after a restart resumes at its next slot', async () => {
    const { runs, scheduler } = harness();
    scheduler.add({ reqId: 'p', request: { type: 'smtp', target: 'x.example', interval: 60 }, acceptedAt: T0 - 90_000 });
    await tick(29_999);
    assert.equal(runs.length, 0);
    await tick(1);
    assert.deepEqual(runs.map((run) => run.at), [30_000]);
  });

  test('skips and counts a slot while the previous run is still pending', async () => {
    const { runs, add, scheduler } = harness();
    add('p', { interval: 60 });
    await tick(0);
    await tick(60_000);
    await tick(60_000);
    assert.equal(runs.length, 1);
    assert.equal(scheduler.depths().skipped, 2);
    await finishAll(runs);
    await tick(60_000);
    assert.equal(runs.length, 2);
  });

  test('stop drops a periodic request and its waiting run', async () => {
    const { runs, add, scheduler, finished } = harness({ maxConcurrent: 1 });
    add('busy');
    add('p', { interval: 60 });
    await tick(0);
    assert.equal(scheduler.depths().waiting, 1);
    assert.equal(scheduler.stop('p'), true);
    assert.equal(scheduler.stop('p'), false);
    await finishAll(runs);
    await tick(120_000);
    assert.deepEqual(runs.map((run) => run.reqId), ['busy']);
    assert.deepEqual(finished, ['busy']);
    assert.deepEqual(scheduler.depths(), { running: 0, waiting: 0, periodic: 0, skipped: 0 });
  });

  test('holds runs back under memory pressure, and starts them when it eases', async () => {
    const { runs, add, setCanStart } = harness({ pressureRetryMs: 1000 });
    setCanStart(false);
    add('a');
    await tick(5_000);
    assert.equal(runs.length, 0);
    setCanStart(true);
    await tick(1000);
    assert.equal(runs.length, 1);
  });

  test('bounds the requests it holds', () => {
    const { add, scheduler } = harness({ maxOneOffs: 2, maxPeriodic: 1 });
    add('a');
    add('b');
    add('p', { interval: 60 });
    assert.equal(scheduler.hasRoom({ type: 'smtp', target: 'x' }), false);
    assert.equal(scheduler.hasRoom({ type: 'smtp', target: 'x', interval: 60 }), false);
    assert.throws(() => add('c'));
  });

  test('close waits for the grace period, then aborts; an interrupted one-off is not finished', async () => {
    const { runs, add, scheduler, finished } = harness();
    add('a');
    add('b');
    add('later', { start_time: T0 / 1000 + 60 });
    await tick(0);
    let closed = false;
    const closing = scheduler.close(5000).then(() => {
      closed = true;
    });
    runs[0]?.finish();
    await tick(4_999);
    assert.equal(closed, false);
    assert.equal(runs[1]?.signal.aborted, false);
    await tick(1);
    assert.equal(runs[1]?.signal.aborted, true);
    runs[1]?.finish('interrupted');
    await tick(0);
    await closing;
    await tick(120_000);
    assert.deepEqual(finished, ['a']);
    assert.equal(runs.length, 2);
  });
});
