// The probe agent: takes measurement requests from the controller over MQTT, runs them, and
// delivers every result durably (DESIGN.md, "The MQTT link").
//
//   cmd/{reqId} --validate--> ack/{reqId}; accepted requests go to disk, then to the scheduler
//   scheduler --measure()--> result --outbox (fsync)--> delivery --> result/{reqId}
//   result-ack --> outbox entries removed
//   status (retained): birth on connect, refreshed periodically, offline by will or at stop
//
// Memory is budgeted: near the heap limit new requests are refused with `memory-pressure` and
// due runs wait; depths of the queue, the outbox and the heap are in the status.

import { randomUUID } from 'node:crypto';
import { getHeapStatistics } from 'node:v8';
import { join } from 'node:path';
import type { MeasureOptions } from '../measure/options';
import type { SmtpResult } from '../result';
import { FW, VERSION } from '../version';
import { TokenBucket } from './bucket';
import type { AgentConfig } from './config';
import { Delivery } from './delivery';
import { LinkError, MqttLink } from './link';
import type { Log } from './log';
import { Outbox } from './outbox';
import { TOPIC_ROOT, topics, type Ack, type MeasurementRequest, type ProbeStatus, type PublishedResult, type RejectReason } from './protocol';
import { payloadDigest, RecentRequests, RequestStore } from './requests';
import { DEFAULT_SCHEDULER_LIMITS, type RunOutcome, Scheduler, type ScheduledRequest } from './scheduler';
import { DEFAULT_REQUEST_LIMITS, parseCommand, parseResultAck, validateRequestId, type ValidationContext } from './validate';

export type MeasureFn = (options: MeasureOptions) => Promise<SmtpResult>;

export interface AgentDeps {
  measure: MeasureFn;
  /** the driver's address policy (firmware/measure/address.ts) */
  isAllowedAddress: (address: string) => boolean;
  log: Log;
  /** heap in use, bytes; replaceable so tests can put the agent under pressure */
  heapUsed?: () => number;
  random?: () => number;
}

/** Request ids remembered to tell redeliveries from reused ids. */
const RECENT_REQUEST_IDS = 1024;
/** New work is refused once the heap reaches this share of the budget. */
const MEMORY_PRESSURE_RATIO = 0.9;
/** Result ids one result-ack may carry. */
const RESULT_ACK_MAX_IDS = 1000;
/**
 * MQTT 5 maximum packet size we accept: room for the largest command payload the settings
 * allow (64 KiB) and a full result-ack, so an oversized command still gets its rejection while
 * anything bigger is dropped by the broker.
 */
const MAX_INCOMING_PACKET_BYTES = 128 * 1024;
/** A burst of status changes (results dropped) is published once. */
const STATUS_DEBOUNCE_MS = 1000;
/** How long stopping waits for the broker (offline status, DISCONNECT). */
const STOP_BROKER_TIMEOUT_MS = 2000;

function rejection(reqId: string, reason: RejectReason, message: string): Ack {
  return { req_id: reqId, accepted: false, reason, message };
}

/** Transient refusals: the same id may succeed later, so they are not remembered. */
function isTransient(ack: Ack): boolean {
  return !ack.accepted && (ack.reason === 'too-many-requests' || ack.reason === 'memory-pressure');
}

export class Agent {
  private readonly bootId = randomUUID();
  private readonly link: MqttLink;
  private readonly scheduler: Scheduler;
  private readonly delivery: Delivery;
  private readonly recent = new RecentRequests(RECENT_REQUEST_IDS);
  private readonly commands: TokenBucket;
  private readonly heapUsed: () => number;
  /** request-file removals under way; stopping waits for them */
  private readonly removals = new Set<Promise<void>>();
  private statusTimer: NodeJS.Timeout | undefined;
  private statusDebounce: NodeJS.Timeout | undefined;
  private reportedDropped: number;
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly config: AgentConfig,
    private readonly deps: AgentDeps,
    private readonly outbox: Outbox,
    private readonly requests: RequestStore,
  ) {
    this.heapUsed = deps.heapUsed ?? (() => getHeapStatistics().used_heap_size);
    this.commands = new TokenBucket(config.cmdBurst, 1000 / config.cmdPerS, Date.now());
    this.reportedDropped = outbox.status().dropped;
    this.scheduler = new Scheduler(
      {
        ...DEFAULT_SCHEDULER_LIMITS,
        maxConcurrent: config.maxConcurrent,
        maxOneOffs: config.maxOneOffs,
        maxPeriodic: config.maxPeriodic,
        targetBurst: config.targetBurst,
        targetRefillMs: config.targetRefillMs,
      },
      {
        run: (job, signal) => this.run(job, signal),
        finished: (job) => this.forget(job.reqId),
        canStart: () => !this.underMemoryPressure(),
      },
      deps.random,
    );
    this.delivery = new Delivery(
      outbox,
      (entry, payload) => this.link.publish(topics.result(config.probeId, entry.reqId), payload),
      { window: config.inflightWindow, resendMs: config.resendMs },
      deps.log,
    );
    this.link = new MqttLink(
      {
        ...config,
        maxIncomingPacketBytes: MAX_INCOMING_PACKET_BYTES,
        will: () => ({ topic: topics.status(config.probeId), payload: JSON.stringify(this.offlineStatus()) }),
      },
      {
        connected: () => this.onConnected(),
        disconnected: () => this.delivery.stop(),
        message: (topic, payload) => this.onMessage(topic, payload),
      },
      deps.log,
      deps.random,
    );
  }

  /** Opens the data folder, takes up stored requests and results, and connects. */
  static async start(config: AgentConfig, deps: AgentDeps): Promise<Agent> {
    const outbox = await Outbox.open(join(config.dataDir, 'outbox'), { maxBytes: config.outboxMaxBytes, maxEntries: config.outboxMaxEntries });
    const requests = await RequestStore.open(join(config.dataDir, 'requests'));
    const agent = new Agent(config, deps, outbox, requests);
    await agent.restore();
    agent.link.start();
    agent.statusTimer = setInterval(() => agent.publishStatus(), config.statusIntervalS * 1000);
    return agent;
  }

  status(online = true): ProbeStatus {
    return {
      ...this.offlineStatus(),
      online,
      outbox: this.outbox.status(),
      heap: { used: this.heapUsed(), limit: this.config.heapLimitBytes },
      queue: this.scheduler.depths(),
    };
  }

  /**
   * Stops cleanly: no new work; running measurements get the grace period, then are
   * interrupted (an interrupted one-off runs again after restart); results are on disk; the
   * offline status is published and the session closed. Safe to call more than once.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutDown();
    return this.stopping;
  }

  private async shutDown(): Promise<void> {
    clearInterval(this.statusTimer);
    clearTimeout(this.statusDebounce);
    await this.scheduler.close(this.config.shutdownGraceMs);
    await this.outbox.flush();
    await Promise.all(this.removals);
    this.delivery.stop();
    if (this.link.connected) {
      const offline = this.link.publish(topics.status(this.config.probeId), JSON.stringify(this.status(false)), true);
      await Promise.race([offline, new Promise((resolve) => setTimeout(resolve, STOP_BROKER_TIMEOUT_MS).unref())]).catch((error: unknown) =>
        this.deps.log('status-publish-failed', { message: String(error).slice(0, 200) }),
      );
    }
    await this.link.close(STOP_BROKER_TIMEOUT_MS);
    this.deps.log('agent-stopped', { outbox_depth: this.outbox.status().depth });
  }

  private offlineStatus(): ProbeStatus {
    return {
      probe_id: this.config.probeId,
      online: false,
      fw: FW,
      version: VERSION,
      boot_id: this.bootId,
      timestamp: Math.floor(Date.now() / 1000),
    };
  }

  private validationContext(): ValidationContext {
    return {
      limits: { ...DEFAULT_REQUEST_LIMITS, maxPayloadBytes: this.config.maxPayloadBytes, minIntervalS: this.config.minIntervalS },
      allowPrivate: this.config.allowPrivate,
      isAllowedAddress: this.deps.isAllowedAddress,
      now: Math.floor(Date.now() / 1000),
    };
  }

  private underMemoryPressure(): boolean {
    return this.heapUsed() >= this.config.heapLimitBytes * MEMORY_PRESSURE_RATIO;
  }

  /** Requests accepted before a restart run again under today's rules; the rest are dropped. */
  private async restore(): Promise<void> {
    const { stored, unreadable } = await this.requests.load();
    let restored = 0;
    for (const { reqId, acceptedAt, payload } of stored) {
      const command = parseCommand(payload, this.validationContext());
      if (!command.ok || command.value.kind !== 'measure' || !this.scheduler.hasRoom(command.value.request)) {
        this.deps.log('request-dropped', { req_id: reqId, reason: command.ok ? 'no-room' : command.reason });
        await this.requests.remove(reqId);
        continue;
      }
      this.scheduler.add({ reqId, request: command.value.request, acceptedAt });
      this.recent.remember(reqId, payloadDigest(payload), { req_id: reqId, accepted: true });
      restored++;
    }
    const outbox = this.outbox.status();
    this.deps.log('agent-started', {
      probe_id: this.config.probeId,
      requests: restored,
      unreadable,
      outbox_depth: outbox.depth,
      dropped: outbox.dropped,
      // The budget is ours; V8's own limit comes from node --max-old-space-size.
      heap_limit: this.config.heapLimitBytes,
      v8_heap_limit: getHeapStatistics().heap_size_limit,
    });
  }

  private onConnected(): void {
    this.link.subscribe([topics.cmdFilter(this.config.probeId), topics.resultAck(this.config.probeId)]).then(
      () => {
        this.publishStatus();
        this.delivery.start();
      },
      (error: unknown) => {
        // Without its subscriptions the probe can neither take requests nor learn what the
        // controller stored: try the whole connection again later.
        this.deps.log('subscribe-failed', { message: String(error).slice(0, 200) });
        if (!(error instanceof LinkError) || error.code === 'subscribe-refused') this.link.drop();
      },
    );
  }

  private publishStatus(): void {
    if (!this.link.connected) return;
    this.link
      .publish(topics.status(this.config.probeId), JSON.stringify(this.status(true)), true)
      .catch((error: unknown) => this.deps.log('status-publish-failed', { message: String(error).slice(0, 200) }));
  }

  private async onMessage(topic: string, payload: Buffer): Promise<boolean> {
    const prefix = `${TOPIC_ROOT}/${this.config.probeId}/`;
    if (!topic.startsWith(prefix)) return true;
    const rest = topic.slice(prefix.length);
    if (rest === 'result-ack') await this.onResultAck(payload);
    else if (rest.startsWith('cmd/')) {
      // While stopping, a command is not handled and not acknowledged: the broker delivers it
      // again to the next session.
      if (this.stopping) return false;
      await this.onCommand(rest.slice('cmd/'.length), payload);
    }
    return true;
  }

  private async onResultAck(payload: Buffer): Promise<void> {
    const ack = parseResultAck(payload, RESULT_ACK_MAX_IDS);
    if (!ack.ok) {
      this.deps.log('result-ack-invalid', { reason: ack.reason, message: ack.message });
      return;
    }
    await this.delivery.acknowledged(ack.value);
  }

  private async onCommand(reqId: string, payload: Buffer): Promise<void> {
    const digest = payloadDigest(payload);
    const ack = await this.decide(reqId, payload, digest);
    if (!ack.accepted) this.deps.log('request-rejected', { req_id: ack.req_id.slice(0, 64), reason: ack.reason });
    this.link
      .publish(topics.ack(this.config.probeId, reqId), JSON.stringify(ack))
      .catch((error: unknown) => this.deps.log('ack-publish-failed', { req_id: ack.req_id.slice(0, 64), message: String(error).slice(0, 200) }));
  }

  /** The answer to one command, in a fixed order of checks; remembers lasting answers. */
  private async decide(reqId: string, payload: Buffer, digest: string): Promise<Ack> {
    const id = validateRequestId(reqId);
    if (!id.ok) return rejection(reqId, id.reason, id.message);
    if (!this.commands.take(Date.now())) return rejection(reqId, 'too-many-requests', `more than ${this.config.cmdPerS} commands per second`);
    const seen = this.recent.get(reqId);
    // A QoS 1 redelivery carries the same bytes and gets the same answer again.
    if (seen) return seen.digest === digest ? seen.ack : rejection(reqId, 'duplicate-request', 'request id already used');
    if (this.scheduler.has(reqId)) return rejection(reqId, 'duplicate-request', 'request id already used');
    const ack = await this.admit(reqId, payload);
    if (!isTransient(ack)) this.recent.remember(reqId, digest, ack);
    return ack;
  }

  private async admit(reqId: string, payload: Buffer): Promise<Ack> {
    if (this.underMemoryPressure()) return rejection(reqId, 'memory-pressure', 'the probe is near its memory budget');
    const command = parseCommand(payload, this.validationContext());
    if (!command.ok) return rejection(reqId, command.reason, command.message);
    if (command.value.kind === 'stop') {
      const target = command.value.request.req_id;
      if (!this.scheduler.stop(target)) return rejection(reqId, 'unknown-request', `no request ${target} is held`);
      await this.requests.remove(target);
      return { req_id: reqId, accepted: true };
    }
    const { request } = command.value;
    if (!this.scheduler.hasRoom(request)) {
      return rejection(reqId, 'too-many-requests', `the probe holds the most ${request.interval === undefined ? 'one-off' : 'periodic'} requests it may`);
    }
    const job: ScheduledRequest = { reqId, request, acceptedAt: Date.now() };
    // On disk before "accepted" is said: a restart runs it all the same.
    await this.requests.save(job, payload);
    this.scheduler.add(job);
    return { req_id: reqId, accepted: true };
  }

  private measureOptions(request: MeasurementRequest, signal: AbortSignal): MeasureOptions {
    return {
      target: request.target,
      port: request.port,
      af: request.af,
      mx: request.mx,
      mode: request.mode,
      sni: request.sni,
      helo: request.helo,
      timeoutMs: request.timeout,
      transcript: request.transcript,
      msm_id: request.msm_id,
      prb_id: this.config.prbId,
      resolver: this.config.resolver,
      allowPrivate: this.config.allowPrivate,
      signal,
    };
  }

  private async run(job: ScheduledRequest, signal: AbortSignal): Promise<RunOutcome> {
    let result: SmtpResult;
    try {
      result = await this.deps.measure(this.measureOptions(job.request, signal));
    } catch (error) {
      this.deps.log('measure-crashed', { req_id: job.reqId, message: String(error).slice(0, 200) });
      return 'done';
    }
    if (signal.aborted) return 'interrupted';
    await this.store(job.reqId, result);
    return 'done';
  }

  /** Result to disk (fsync) first, then to the broker. */
  private async store(reqId: string, result: SmtpResult): Promise<void> {
    const resultId = randomUUID();
    const published: PublishedResult = { ...result, result_id: resultId, req_id: reqId, probe_id: this.config.probeId };
    try {
      await this.outbox.append(reqId, resultId, Buffer.from(JSON.stringify(published)));
    } catch (error) {
      this.deps.log('outbox-write-failed', { req_id: reqId, code: String((error as { code?: unknown }).code ?? 'error') });
      return;
    }
    this.delivery.appended();
    const { dropped } = this.outbox.status();
    if (dropped !== this.reportedDropped) {
      this.reportedDropped = dropped;
      this.deps.log('outbox-dropped', { dropped });
      clearTimeout(this.statusDebounce);
      this.statusDebounce = setTimeout(() => this.publishStatus(), STATUS_DEBOUNCE_MS);
    }
  }

  /** The request has nothing more to run: its file goes. */
  private forget(reqId: string): void {
    const removal = this.requests
      .remove(reqId)
      .catch((error: unknown) => this.deps.log('request-remove-failed', { req_id: reqId, code: String((error as { code?: unknown }).code ?? 'error') }))
      .finally(() => this.removals.delete(removal));
    this.removals.add(removal);
  }
}
