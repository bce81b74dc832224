// The reference controller: the platform side of the MQTT link (DESIGN.md, "The MQTT link").
// It tracks probes by their retained status, sends measurement requests and reads their acks,
// and consumes results: each is validated, stored (write + fsync, deduplicated by result_id)
// and only then acknowledged on the probe's result-ack topic, so that a probe deletes a result
// from its outbox only once a controller holds it on disk.
//
// Results are consumed with a shared subscription ($share/GROUP/...) on MQTT 5 brokers, so that
// several controllers on a clustered broker split the load; each result reaches one of them.
// Status and acks are read without sharing: every controller needs the whole fleet's status,
// and an ack belongs to the controller that sent the request.

import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { type Ack, type MeasurementRequest, type ProbeStatus, type PublishedResult, type ResultAck, type StopRequest, TOPIC_ROOT, topics } from '../../firmware/agent/protocol';
import { ResultStore, type StoredRecord, DEFAULT_REMEMBERED_IDS } from './store';
import { type TableInput, type TableRow, buildTable } from './table';

export const DEFAULT_SHARE_GROUP = 'ctl';
export const DEFAULT_MAX_RESULT_BYTES = 256 * 1024;
export const DEFAULT_MAX_PENDING_RESULTS = 10_000;
export const DEFAULT_MAX_PENDING_REQUESTS = 10_000;
export const DEFAULT_ACK_TIMEOUT_MS = 15_000;
/** result ids per result-ack message, so that an ack stays a small packet */
export const MAX_IDS_PER_ACK = 500;
const MAX_STATUS_BYTES = 64 * 1024;
const MAX_ACK_BYTES = 8 * 1024;
const MAX_RESULT_ID_LENGTH = 128;
const MAX_TRACKED_PROBES = 100_000;
const MAX_TABLE_PAIRS = 10_000;
const RECONNECT_PERIOD_MS = 1_000;

export type ControllerErrorCode = 'ack-timeout' | 'probes-timeout' | 'too-many-pending-requests' | 'closed' | 'connect-failed' | 'subscribe-refused';

export class ControllerError extends Error {
  constructor(
    readonly code: ControllerErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ControllerError';
  }
}

/** Why a result was not stored; it is not acknowledged either, so the probe keeps it. */
export type RefusalReason = 'payload-too-large' | 'malformed-json' | 'invalid-result' | 'probe-id-mismatch' | 'request-id-mismatch' | 'controller-busy';

export interface Refusal {
  topic: string;
  probeId: string;
  reason: RefusalReason;
}

export interface ControllerOptions {
  /** mqtt://host:port or mqtts://host:port */
  brokerUrl: string;
  /** the JSON-lines result file */
  resultsFile: string;
  /** 5 (default) or 4 for MQTT 3.1.1 brokers such as the embedded aedes */
  protocolVersion?: 4 | 5;
  /** shared-subscription group; `false` for a plain subscription (brokers without $share) */
  shareGroup?: string | false;
  /** default a random one; brokers with use_username_as_clientid use the certificate CN */
  clientId?: string;
  /** PEM: trust anchors for the broker and this controller's client certificate */
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  rememberedIds?: number;
  maxResultBytes?: number;
  maxPendingResults?: number;
  maxPendingRequests?: number;
  ackTimeoutMs?: number;
  connectTimeoutMs?: number;
}

interface PendingRequest {
  resolve(ack: Ack): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export interface ControllerCounters {
  stored: number;
  duplicates: number;
  refused: number;
  acksSent: number;
}

export interface Controller {
  on(event: 'status', listener: (status: ProbeStatus) => void): this;
  on(event: 'stored', listener: (result: PublishedResult) => void): this;
  on(event: 'duplicate', listener: (probeId: string, resultId: string) => void): this;
  on(event: 'refused', listener: (refusal: Refusal) => void): this;
  /** a broker or disk problem the controller goes on after (reconnect, results sent again) */
  on(event: 'fault', listener: (error: Error) => void): this;
}

/** The topic levels after TOPIC_ROOT: [probeId, kind, reqId?]. */
function topicLevels(topic: string): string[] | undefined {
  const prefix = `${TOPIC_ROOT}/`;
  if (!topic.startsWith(prefix)) return undefined;
  return topic.slice(prefix.length).split('/');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The fields the controller relies on; anything else in a result is stored as sent. */
function isTableable(value: Record<string, unknown>): boolean {
  return (
    value.type === 'smtp' &&
    typeof value.dst_name === 'string' &&
    typeof value.dst_port === 'string' &&
    typeof value.status === 'string' &&
    typeof value.phase === 'string' &&
    typeof value.timestamp === 'number' &&
    Array.isArray(value.findings) &&
    value.findings.every((finding) => typeof finding === 'string') &&
    (value.ehlo === undefined || (isObject(value.ehlo) && isObject(value.ehlo.capabilities))) &&
    (value.tls === undefined || isObject(value.tls))
  );
}

/** A JSON payload within `maxBytes`, or why not. */
function readJson(payload: Buffer, maxBytes: number): { ok: true; value: unknown } | { ok: false; reason: 'payload-too-large' | 'malformed-json' } {
  if (payload.length > maxBytes) return { ok: false, reason: 'payload-too-large' };
  try {
    return { ok: true, value: JSON.parse(payload.toString('utf8')) };
  } catch {
    return { ok: false, reason: 'malformed-json' };
  }
}

export function newRequestId(): string {
  return `r-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
}

export class Controller extends EventEmitter {
  readonly counters: ControllerCounters = { stored: 0, duplicates: 0, refused: 0, acksSent: 0 };
  private readonly statuses = new Map<string, ProbeStatus>();
  private readonly latest = new Map<string, TableInput>();
  private readonly requests = new Map<string, PendingRequest>();
  private pendingResults: StoredRecord[] = [];
  private flushing: Promise<void> | undefined;
  private closed = false;

  private constructor(
    private readonly client: MqttClient,
    private readonly store: ResultStore,
    private readonly options: ControllerOptions,
  ) {
    super();
  }

  /** Opens the store, connects, subscribes; resolves once results can flow. */
  static async start(options: ControllerOptions): Promise<Controller> {
    const store = await ResultStore.open(options.resultsFile, options.rememberedIds ?? DEFAULT_REMEMBERED_IDS);
    const protocolVersion = options.protocolVersion ?? 5;
    const clientOptions: IClientOptions = {
      protocolVersion,
      clientId: options.clientId ?? `ctl-${randomBytes(6).toString('hex')}`,
      // A clean session: a controller's share of a shared subscription must end with its
      // connection, or the broker keeps routing results to the absent controller's queue
      // (Mosquitto does). Nothing is lost meanwhile: probes keep unacknowledged results and
      // send them again.
      clean: true,
      connectTimeout: options.connectTimeoutMs ?? 10_000,
      // No reconnecting until the first connect succeeded: a refused first connect is an error
      // for the caller (and a client ended while it was failing would otherwise keep retrying).
      reconnectPeriod: 0,
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
      ...(options.cert !== undefined ? { cert: options.cert } : {}),
      ...(options.key !== undefined ? { key: options.key } : {}),
    };
    // The handler is attached before connecting: mqtt.js emits 'error' for a refused connect.
    const client = mqtt.connect(options.brokerUrl, { ...clientOptions, manualConnect: true });
    const controller = new Controller(client, store, options);
    client.on('message', (topic, payload) => controller.onMessage(topic, payload));
    client.on('error', (error) => controller.emit('fault', error));
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (error: Error): void => {
          client.removeListener('connect', onConnect);
          client.removeListener('close', onClose);
          client.removeListener('error', onError);
          reject(new ControllerError('connect-failed', `cannot connect to ${options.brokerUrl}: ${error.message}`));
        };
        const onConnect = (): void => {
          client.removeListener('error', onError);
          client.removeListener('close', onClose);
          client.options.reconnectPeriod = RECONNECT_PERIOD_MS;
          resolve();
        };
        const onClose = (): void => onError(new Error('connection closed'));
        client.once('error', onError);
        client.once('close', onClose);
        client.once('connect', onConnect);
        client.connect();
      });
      await controller.subscribe();
    } catch (error) {
      client.end(true);
      await store.close();
      throw error;
    }
    return controller;
  }

  private async subscribe(): Promise<void> {
    const group = this.options.shareGroup ?? (this.options.protocolVersion === 4 ? false : DEFAULT_SHARE_GROUP);
    const resultFilter = group === false ? topics.allResults() : topics.sharedResults(group);
    const filters = [topics.allStatus(), topics.allAcks(), resultFilter];
    const granted = await this.client.subscribeAsync(Object.fromEntries(filters.map((topic) => [topic, { qos: 1 as const }])));
    const refused = granted.filter((grant) => grant.qos !== 0 && grant.qos !== 1);
    if (refused.length > 0) throw new ControllerError('subscribe-refused', `broker refused ${refused.map((grant) => grant.topic).join(', ')}`);
  }

  /** Probes by their last status, online or not. */
  probes(): ProbeStatus[] {
    return [...this.statuses.values()];
  }

  onlineProbes(): string[] {
    return this.probes()
      .filter((status) => status.online)
      .map((status) => status.probe_id)
      .sort();
  }

  /** Resolves once every probe in `probeIds` has reported online. */
  waitForProbes(probeIds: string[], timeoutMs: number): Promise<void> {
    const missing = (): string[] => probeIds.filter((id) => this.statuses.get(id)?.online !== true);
    if (missing().length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onStatus = (): void => {
        if (missing().length > 0) return;
        clearTimeout(timer);
        this.removeListener('status', onStatus);
        resolve();
      };
      const timer = setTimeout(() => {
        this.removeListener('status', onStatus);
        reject(new ControllerError('probes-timeout', `probes not online after ${timeoutMs} ms: ${missing().join(', ')}`));
      }, timeoutMs);
      this.on('status', onStatus);
    });
  }

  /** Sends one request to one probe and resolves with its ack (accepted or rejected). */
  request(probeId: string, request: MeasurementRequest | StopRequest, reqId = newRequestId()): Promise<Ack> {
    if (this.closed) return Promise.reject(new ControllerError('closed', 'controller is closed'));
    const maxPending = this.options.maxPendingRequests ?? DEFAULT_MAX_PENDING_REQUESTS;
    if (this.requests.size >= maxPending) return Promise.reject(new ControllerError('too-many-pending-requests', `${maxPending} requests await their ack`));
    const key = `${probeId}/${reqId}`;
    const timeoutMs = this.options.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS;
    return new Promise<Ack>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.requests.delete(key);
        reject(new ControllerError('ack-timeout', `no ack from ${probeId} for ${reqId} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.requests.set(key, { resolve, reject, timer });
      this.client.publish(topics.cmd(probeId, reqId), JSON.stringify(request), { qos: 1 }, (error) => {
        if (!error) return;
        clearTimeout(timer);
        this.requests.delete(key);
        reject(error);
      });
    });
  }

  /** The per-target table over the latest result of each (target, probe) this controller stored. */
  table(): TableRow[] {
    return buildTable(this.latest.values());
  }

  /** Stops consuming, waits for the results in hand to be stored and acked, then disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const [key, pending] of this.requests) {
      clearTimeout(pending.timer);
      pending.reject(new ControllerError('closed', 'controller closed before the ack'));
      this.requests.delete(key);
    }
    this.client.removeAllListeners('message');
    while (this.flushing) await this.flushing;
    await this.client.endAsync();
    await this.store.close();
  }

  private onMessage(topic: string, payload: Buffer): void {
    const levels = topicLevels(topic);
    if (!levels) return;
    const [probeId, kind, reqId] = levels;
    if (kind === 'status' && levels.length === 2) this.onStatus(probeId, payload);
    else if (kind === 'ack' && levels.length === 3) this.onAck(probeId, reqId, payload);
    else if (kind === 'result' && levels.length === 3) this.onResult(topic, probeId, reqId, payload);
  }

  private onStatus(probeId: string, payload: Buffer): void {
    if (payload.length === 0) {
      this.statuses.delete(probeId);
      return;
    }
    const parsed = readJson(payload, MAX_STATUS_BYTES);
    if (!parsed.ok) return;
    const status = parsed.value;
    if (!isObject(status) || status.probe_id !== probeId || typeof status.online !== 'boolean') return;
    if (!this.statuses.has(probeId) && this.statuses.size >= MAX_TRACKED_PROBES) return;
    this.statuses.set(probeId, status as unknown as ProbeStatus);
    this.emit('status', status);
  }

  private onAck(probeId: string, reqId: string, payload: Buffer): void {
    const key = `${probeId}/${reqId}`;
    const pending = this.requests.get(key);
    if (!pending) return;
    const parsed = readJson(payload, MAX_ACK_BYTES);
    if (!parsed.ok) return;
    const ack = parsed.value;
    if (!isObject(ack) || ack.req_id !== reqId || typeof ack.accepted !== 'boolean') return;
    clearTimeout(pending.timer);
    this.requests.delete(key);
    pending.resolve(ack as unknown as Ack);
  }

  private refuse(topic: string, probeId: string, reason: RefusalReason): void {
    this.counters.refused += 1;
    this.emit('refused', { topic, probeId, reason });
  }

  private onResult(topic: string, probeId: string, reqId: string, payload: Buffer): void {
    const parsed = readJson(payload, this.options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES);
    if (!parsed.ok) return this.refuse(topic, probeId, parsed.reason);
    const value = parsed.value;
    if (!isObject(value) || typeof value.result_id !== 'string' || value.result_id.length === 0 || value.result_id.length > MAX_RESULT_ID_LENGTH || !isTableable(value)) {
      return this.refuse(topic, probeId, 'invalid-result');
    }
    // The broker's ACL ties the topic to the probe's identity; the payload must agree with it.
    if (value.probe_id !== probeId) return this.refuse(topic, probeId, 'probe-id-mismatch');
    if (value.req_id !== reqId) return this.refuse(topic, probeId, 'request-id-mismatch');
    if (this.pendingResults.length >= (this.options.maxPendingResults ?? DEFAULT_MAX_PENDING_RESULTS)) return this.refuse(topic, probeId, 'controller-busy');
    this.pendingResults.push(value as StoredRecord);
    if (!this.flushing) this.flushing = this.flush();
  }

  /** Stores what arrived, in batches of one write and one fsync, then acks each probe's ids. */
  private async flush(): Promise<void> {
    try {
      while (this.pendingResults.length > 0) {
        const batch = this.pendingResults;
        this.pendingResults = [];
        let outcome;
        try {
          outcome = await this.store.append(batch);
        } catch (error) {
          // Nothing of this batch is acked: the probes keep the results and send them again.
          this.emit('fault', error as Error);
          continue;
        }
        for (const record of outcome.stored) {
          const result = record as unknown as PublishedResult;
          this.counters.stored += 1;
          this.remember(result);
          this.emit('stored', result);
        }
        for (const record of outcome.duplicates) {
          this.counters.duplicates += 1;
          this.emit('duplicate', record.probe_id, record.result_id);
        }
        this.acknowledge([...outcome.stored, ...outcome.duplicates]);
      }
    } finally {
      this.flushing = undefined;
    }
  }

  private acknowledge(records: StoredRecord[]): void {
    const byProbe = new Map<string, string[]>();
    for (const record of records) {
      const ids = byProbe.get(record.probe_id) ?? [];
      ids.push(record.result_id);
      byProbe.set(record.probe_id, ids);
    }
    for (const [probeId, ids] of byProbe) {
      for (let start = 0; start < ids.length; start += MAX_IDS_PER_ACK) {
        const ack: ResultAck = { result_ids: ids.slice(start, start + MAX_IDS_PER_ACK) };
        this.client.publish(topics.resultAck(probeId), JSON.stringify(ack), { qos: 1 }, (error) => {
          if (error) this.emit('fault', error);
        });
        this.counters.acksSent += 1;
      }
    }
  }

  private remember(result: PublishedResult): void {
    const key = `${result.dst_name}:${result.dst_port}\u0000${result.probe_id}`;
    this.latest.delete(key);
    this.latest.set(key, result);
    if (this.latest.size > MAX_TABLE_PAIRS) this.latest.delete(this.latest.keys().next().value as string);
  }
}
