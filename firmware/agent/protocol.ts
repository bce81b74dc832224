// The MQTT contract between probe and controller (DESIGN.md, "The MQTT link"): topics and
// payload shapes. The probe id is one topic level, equal to the MQTT username / certificate
// CN, so a broker ACL `pattern write fleet/v1/probe/%u/#` confines each probe to its subtree.

import type { SmtpResult } from '../result';

export const TOPIC_ROOT = 'fleet/v1/probe';

export const topics = {
  status: (probeId: string) => `${TOPIC_ROOT}/${probeId}/status`,
  cmd: (probeId: string, reqId: string) => `${TOPIC_ROOT}/${probeId}/cmd/${reqId}`,
  cmdFilter: (probeId: string) => `${TOPIC_ROOT}/${probeId}/cmd/+`,
  ack: (probeId: string, reqId: string) => `${TOPIC_ROOT}/${probeId}/ack/${reqId}`,
  result: (probeId: string, reqId: string) => `${TOPIC_ROOT}/${probeId}/result/${reqId}`,
  resultAck: (probeId: string) => `${TOPIC_ROOT}/${probeId}/result-ack`,
  /** what controllers subscribe to, sharing the load (MQTT 5 shared subscriptions) */
  sharedResults: (group: string) => `$share/${group}/${TOPIC_ROOT}/+/result/+`,
  allStatus: () => `${TOPIC_ROOT}/+/status`,
  /** acks go to every controller: the one that sent the request must see it */
  allAcks: () => `${TOPIC_ROOT}/+/ack/+`,
  allResults: () => `${TOPIC_ROOT}/+/result/+`,
};

/**
 * A measurement request (Atlas-like definition). The smallest valid one is a one-off:
 * {"type":"smtp","target":"mx.example.org","af":4,"port":25}. With `interval` it is periodic:
 * every `interval` seconds, each run delayed by a random 0..`spread` seconds, between
 * `start_time` and `stop_time` (Unix seconds) when given.
 */
export interface MeasurementRequest {
  type: 'smtp';
  target: string;
  af?: 4 | 6;
  port?: number;
  mx?: boolean;
  mode?: 'starttls' | 'implicit-tls' | 'plain';
  sni?: string;
  helo?: string;
  /** whole-measurement deadline, ms */
  timeout?: number;
  transcript?: boolean;
  msm_id?: number;
  interval?: number;
  spread?: number;
  start_time?: number;
  stop_time?: number;
}

/** Stops a periodic request that the probe accepted earlier. */
export interface StopRequest {
  type: 'stop';
  req_id: string;
}

export type RejectReason =
  | 'malformed-json'
  | 'payload-too-large'
  | 'invalid-request-id'
  | 'unsupported-type'
  | 'unknown-field'
  | 'missing-field'
  | 'invalid-field'
  | 'target-not-allowed'
  /** a request id seen with other bytes; the same bytes again (a QoS 1 redelivery) get the first ack again */
  | 'duplicate-request'
  | 'unknown-request'
  | 'too-many-requests'
  | 'memory-pressure';

export type Ack =
  | { req_id: string; accepted: true }
  | { req_id: string; accepted: false; reason: RejectReason; message: string };

export interface OutboxStatus {
  depth: number;
  bytes: number;
  dropped: number;
}

/** The retained status (birth) message; the last will is `{ online: false, ... }`. */
export interface ProbeStatus {
  probe_id: string;
  online: boolean;
  fw: number;
  version: string;
  boot_id: string;
  timestamp: number;
  eligibility?: unknown;
  outbox?: OutboxStatus;
  heap?: { used: number; limit: number };
  /** `skipped`: periodic runs not started because the previous run was still pending */
  queue?: { running: number; waiting: number; periodic: number; skipped?: number };
}

/** A result as published: the measurement result plus its unique id and request id. */
export type PublishedResult = SmtpResult & { result_id: string; req_id: string; probe_id: string };

/** The controller's acknowledgement of stored results; the probe then deletes them. */
export interface ResultAck {
  result_ids: string[];
}
