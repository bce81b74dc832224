// The agent's memory budget on the probe model it targets, and the limits derived from it.
//
// Probe model: v4/v5 class hardware, 512 MiB to 1 GiB of RAM shared with the other
// measurements (v3 class, 32 MiB, cannot run Node at all). The agent gets 64 MiB of V8 heap.
// The launcher enforces that with V8 flags; the agent's own limits (config file) are derived
// here so that what it holds stays well inside it:
//
//   heap = young generation + old space. V8 (Node 18) sizes the young generation at three
//   semi-spaces (two for the scavenger, one for new large objects), so a 2 MiB semi-space
//   leaves 64 - 6 = 58 MiB of old space.
//
//   live data target = half the budget: V8's used heap counts garbage not collected yet, and
//   the agent refuses new work once used heap reaches 90% of heap_limit_mb
//   (firmware/agent/agent.ts), which must stay a rare event, not the steady state.
//
//   live = idle agent + running measurements + held requests + outbox index + in-flight results
//
// The idle heap and the heap one running measurement adds are measured on Debian's Node 18 on
// armhf and arm64 (the larger of the two: arm64's 64-bit heap) by `npm run footprint` and kept
// in footprint.json; the other costs are bounds from
// the agent's own limits (payload size, result size). The share of the live target each part
// may use is a policy choice, stated below.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const REPO_ROOT = join(__dirname, '..', '..');
export const FOOTPRINT_FILE = join(REPO_ROOT, 'footprint.json');

export const PROBE_MODEL = { name: 'v4/v5 class', ramMiB: '512 to 1024', heapBudgetMiB: 64 } as const;

/** V8 semi-space size: small, so scavenges stay short and the young generation small. */
const SEMI_SPACE_MIB = 2;
/** Young generation = this many semi-spaces (V8 10.2, Node 18). */
const SEMI_SPACES_PER_YOUNG_GENERATION = 3;
/** Share of the heap budget live data may fill. */
const LIVE_SHARE = 0.5;
/** How the live target (beyond the idle agent) is split. */
const SHARES = { measurements: 0.5, requests: 0.2, outboxIndex: 0.15, inflight: 0.15 } as const;
/** Of the held requests, one-offs and periodic ones. */
const ONE_OFF_SHARE = 2 / 3;

/** A held request: at most max_payload_bytes (4 KiB) of JSON, about twice that as objects and timers. */
const REQUEST_KIB = 8;
/** An outbox index entry: sequence, result id, request id, size (firmware/agent/outbox.ts). */
const OUTBOX_ENTRY_KIB = 0.25;
/**
 * A result being published: up to 64 KiB of recorded conversation (session maxBytes) plus up to
 * 10 certificates, held as a string and as the MQTT packet's buffer.
 */
const INFLIGHT_RESULT_KIB = 2 * (64 + 10 * 4);

/** Upper bounds that are not about memory. */
const CAPS = {
  /** what the probe does to the network at once; the busy figure is 50 */
  maxConcurrent: 50,
  maxOneOffs: 1000,
  maxPeriodic: 500,
  outboxMaxEntries: 20_000,
  inflightWindow: 50,
} as const;

/** What footprint.json must hold for the derivation (written by `npm run footprint`). */
export interface MeasuredCosts {
  /** heap used by the agent at rest (connected, no work), Node 18 on ARM (the larger of armhf and arm64), MiB */
  idleHeapMiB: number;
  /** heap one more running measurement adds to the agent, Node 18 on ARM (the larger), KiB */
  perMeasurementKiB: number;
  /** what Node needs beyond its V8 heap (code, ICU, OpenSSL, buffers) when busy, natively, MiB */
  nativeOverheadMiB: number;
}

export interface AgentBudget {
  heapBudgetMiB: number;
  /** V8 flags the launcher passes */
  nodeFlags: string[];
  /** the agent's config file keys (firmware/agent/config.ts) */
  config: {
    heap_limit_mb: number;
    max_concurrent: number;
    max_one_offs: number;
    max_periodic: number;
    outbox_max_entries: number;
    inflight_window: number;
  };
  /** systemd MemoryMax: the heap budget plus what Node needs beside it, with room */
  memoryMaxMiB: number;
  /** live data the limits allow at most, MiB: stays at or under liveTargetMiB */
  liveAtLimitsMiB: number;
  liveTargetMiB: number;
}

export function readMeasuredCosts(file: string = FOOTPRINT_FILE): MeasuredCosts {
  const figures = JSON.parse(readFileSync(file, 'utf8')) as { budget_inputs?: Partial<MeasuredCosts> };
  const inputs = figures.budget_inputs;
  const ok = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value) && value > 0;
  if (!inputs || !ok(inputs.idleHeapMiB) || !ok(inputs.perMeasurementKiB) || !ok(inputs.nativeOverheadMiB)) {
    throw new Error(`${file} has no budget_inputs; run npm run footprint`);
  }
  return { idleHeapMiB: inputs.idleHeapMiB, perMeasurementKiB: inputs.perMeasurementKiB, nativeOverheadMiB: inputs.nativeOverheadMiB };
}

const roundUp = (value: number, step: number): number => Math.ceil(value / step) * step;

/**
 * Rounds down to two significant digits (18493 -> 18000, 513 -> 510), so that noise in the
 * measured costs does not change the shipped limits on every footprint run.
 */
function roundDown(value: number): number {
  if (value < 100) return Math.max(1, Math.floor(value));
  const step = 10 ** (Math.floor(Math.log10(value)) - 1);
  return Math.floor(value / step) * step;
}

/** The V8 flags that hold the heap to `heapBudgetMiB`: old space plus the young generation. */
export function nodeFlags(heapBudgetMiB: number = PROBE_MODEL.heapBudgetMiB): string[] {
  const oldSpaceMiB = heapBudgetMiB - SEMI_SPACE_MIB * SEMI_SPACES_PER_YOUNG_GENERATION;
  return [`--max-old-space-size=${oldSpaceMiB}`, `--max-semi-space-size=${SEMI_SPACE_MIB}`];
}

export function deriveBudget(costs: MeasuredCosts, heapBudgetMiB: number = PROBE_MODEL.heapBudgetMiB): AgentBudget {
  const liveTargetMiB = heapBudgetMiB * LIVE_SHARE;
  const spareKiB = Math.max(0, liveTargetMiB - costs.idleHeapMiB) * 1024;
  const fit = (share: number, eachKiB: number, cap: number): number => roundDown(Math.min(cap, (spareKiB * share) / eachKiB));

  const maxConcurrent = fit(SHARES.measurements, costs.perMeasurementKiB, CAPS.maxConcurrent);
  const requests = fit(SHARES.requests, REQUEST_KIB, CAPS.maxOneOffs + CAPS.maxPeriodic);
  const maxOneOffs = roundDown(Math.min(CAPS.maxOneOffs, requests * ONE_OFF_SHARE));
  const maxPeriodic = roundDown(Math.min(CAPS.maxPeriodic, requests * (1 - ONE_OFF_SHARE)));
  const outboxMaxEntries = fit(SHARES.outboxIndex, OUTBOX_ENTRY_KIB, CAPS.outboxMaxEntries);
  const inflightWindow = fit(SHARES.inflight, INFLIGHT_RESULT_KIB, CAPS.inflightWindow);

  const liveAtLimitsKiB =
    costs.idleHeapMiB * 1024 +
    maxConcurrent * costs.perMeasurementKiB +
    (maxOneOffs + maxPeriodic) * REQUEST_KIB +
    outboxMaxEntries * OUTBOX_ENTRY_KIB +
    inflightWindow * INFLIGHT_RESULT_KIB;

  return {
    heapBudgetMiB,
    nodeFlags: nodeFlags(heapBudgetMiB),
    config: {
      heap_limit_mb: heapBudgetMiB,
      max_concurrent: maxConcurrent,
      max_one_offs: maxOneOffs,
      max_periodic: maxPeriodic,
      outbox_max_entries: outboxMaxEntries,
      inflight_window: inflightWindow,
    },
    memoryMaxMiB: roundUp(heapBudgetMiB + 1.5 * costs.nativeOverheadMiB, 16),
    liveAtLimitsMiB: liveAtLimitsKiB / 1024,
    liveTargetMiB,
  };
}
