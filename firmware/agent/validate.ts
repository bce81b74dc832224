// Strict validation of everything the controller sends (DESIGN.md principle 5): bounded size,
// well-formed UTF-8 JSON, a JSON object, known fields only, right types and ranges, and a target
// the probe may measure. Every refusal is a stable RejectReason plus a short readable message
// that never echoes more than a bounded, printable piece of the input.

import { isIP } from 'node:net';
import type { MeasurementRequest, RejectReason, StopRequest } from './protocol';
import { isHeloArgument, isHostName } from '../names';

/** Request ids are one topic level and part of outbox file names: a small safe alphabet. */
export const REQUEST_ID_SOURCE = '[A-Za-z0-9_.-]{1,64}';
const REQUEST_ID = new RegExp(`^${REQUEST_ID_SOURCE}$`);

export interface RequestLimits {
  maxPayloadBytes: number;
  minIntervalS: number;
  maxIntervalS: number;
  /** spread bound for one-off requests (periodic ones are bounded by their interval) */
  maxOneOffSpreadS: number;
  /** how far ahead a start time may lie; also keeps timers below Node's 2^31 ms limit */
  maxStartAheadS: number;
  minTimeoutMs: number;
  maxTimeoutMs: number;
}

export const DEFAULT_REQUEST_LIMITS: RequestLimits = {
  maxPayloadBytes: 4096,
  minIntervalS: 60,
  maxIntervalS: 7 * 86_400,
  maxOneOffSpreadS: 3600,
  maxStartAheadS: 7 * 86_400,
  minTimeoutMs: 1000,
  maxTimeoutMs: 120_000,
};

export interface ValidationContext {
  limits: RequestLimits;
  /** allow loopback, private, link-local and other non-public targets */
  allowPrivate: boolean;
  /** the driver's address policy (firmware/measure/address.ts) */
  isAllowedAddress: (address: string) => boolean;
  /** Unix seconds */
  now: number;
}

export type Rejection = { ok: false; reason: RejectReason; message: string };
export type Validated<T> = { ok: true; value: T } | Rejection;

export type Command = { kind: 'measure'; request: MeasurementRequest } | { kind: 'stop'; request: StopRequest };

function reject(reason: RejectReason, message: string): Rejection {
  return { ok: false, reason, message };
}

/** At most 64 printable ASCII characters of untrusted text, for messages and logs. */
export function quote(text: string): string {
  const shown = text.slice(0, 64).replace(/[^\x20-\x7e]/g, '?');
  return JSON.stringify(text.length > 64 ? `${shown}...` : shown);
}

export function validateRequestId(reqId: string): Validated<string> {
  return REQUEST_ID.test(reqId)
    ? { ok: true, value: reqId }
    : reject('invalid-request-id', `request id must be 1 to 64 of A-Z a-z 0-9 _ . -, got ${quote(reqId)}`);
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Size bound, UTF-8 and JSON syntax; the result is a JSON object. */
function parseJsonObject(payload: Uint8Array, maxBytes: number): Validated<Record<string, unknown>> {
  if (payload.byteLength > maxBytes) return reject('payload-too-large', `payload is ${payload.byteLength} bytes, the limit is ${maxBytes}`);
  let value: unknown;
  try {
    value = JSON.parse(fatalUtf8.decode(payload));
  } catch {
    return reject('malformed-json', 'payload is not valid UTF-8 JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return reject('malformed-json', 'payload must be a JSON object');
  return { ok: true, value: value as Record<string, unknown> };
}

/** RFC 6761 6.3: localhost names resolve to loopback, so they are private targets. */
function isLocalhostName(name: string): boolean {
  const lower = name.toLowerCase().replace(/\.$/, '');
  return lower === 'localhost' || lower.endsWith('.localhost');
}

type FieldCheck = (value: unknown, field: string) => Rejection | undefined;

function integerIn(min: number, max: number, unit = ''): FieldCheck {
  return (value, field) =>
    typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max
      ? undefined
      : reject('invalid-field', `${field} must be an integer from ${min} to ${max}${unit}`);
}

function oneOf(...allowed: readonly unknown[]): FieldCheck {
  return (value, field) => (allowed.includes(value) ? undefined : reject('invalid-field', `${field} must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`));
}

const isBoolean: FieldCheck = (value, field) => (typeof value === 'boolean' ? undefined : reject('invalid-field', `${field} must be true or false`));

const isHostNameField: FieldCheck = (value, field) =>
  typeof value === 'string' && isHostName(value) ? undefined : reject('invalid-field', `${field} must be a host name`);

const isHeloField: FieldCheck = (value, field) =>
  typeof value === 'string' && isHeloArgument(value)
    ? undefined
    : reject('invalid-field', `${field} must be a host name or an address literal such as [192.0.2.1]`);

const MAX_UINT32 = 0xffff_ffff;

function measurementChecks(limits: RequestLimits): Record<Exclude<keyof MeasurementRequest, 'type'>, FieldCheck> {
  return {
    target: (value, field) =>
      typeof value === 'string' && (isIP(value) !== 0 || isHostName(value))
        ? undefined
        : reject('invalid-field', `${field} must be an IP address or a host name`),
    af: oneOf(4, 6),
    port: integerIn(1, 65_535),
    mx: isBoolean,
    mode: oneOf('starttls', 'implicit-tls', 'plain'),
    sni: isHostNameField,
    helo: isHeloField,
    timeout: integerIn(limits.minTimeoutMs, limits.maxTimeoutMs, ' ms'),
    transcript: isBoolean,
    msm_id: integerIn(0, MAX_UINT32),
    interval: integerIn(limits.minIntervalS, limits.maxIntervalS, ' s'),
    spread: integerIn(0, limits.maxIntervalS, ' s'),
    start_time: integerIn(0, MAX_UINT32),
    stop_time: integerIn(0, MAX_UINT32),
  };
}

/** Checks field names, then each field against its table entry, in a fixed order. */
function checkFields(object: Record<string, unknown>, checks: Record<string, FieldCheck>, required: readonly string[]): Rejection | undefined {
  for (const field of Object.keys(object)) {
    if (!Object.prototype.hasOwnProperty.call(checks, field)) return reject('unknown-field', `unknown field ${quote(field)}`);
  }
  for (const field of required) {
    if (object[field] === undefined) return reject('missing-field', `${field} is required`);
  }
  for (const [field, check] of Object.entries(checks)) {
    if (object[field] === undefined) continue;
    const failure = check(object[field], field);
    if (failure) return failure;
  }
  return undefined;
}

/** The rules that tie fields together, after each field is valid on its own. */
function checkMeasurement(request: MeasurementRequest, context: ValidationContext): Rejection | undefined {
  const { limits, now } = context;
  const family = isIP(request.target);
  if (family !== 0) {
    if (request.mx) return reject('invalid-field', 'mx needs a mail domain as target, not an address');
    if (request.af !== undefined && request.af !== family) return reject('invalid-field', `af ${request.af} does not match the IPv${family} target`);
    if (!context.allowPrivate && !context.isAllowedAddress(request.target)) {
      return reject('target-not-allowed', `target ${quote(request.target)} is not a public unicast address`);
    }
  } else if (!context.allowPrivate && isLocalhostName(request.target)) {
    return reject('target-not-allowed', `target ${quote(request.target)} is a localhost name`);
  }
  const periodic = request.interval !== undefined;
  const spreadLimit = periodic ? (request.interval as number) : limits.maxOneOffSpreadS;
  if (request.spread !== undefined && request.spread > spreadLimit) {
    return reject('invalid-field', `spread must not exceed ${periodic ? 'the interval' : `${limits.maxOneOffSpreadS} s for a one-off`}`);
  }
  if (request.start_time !== undefined && request.start_time > now + limits.maxStartAheadS) {
    return reject('invalid-field', `start_time lies more than ${limits.maxStartAheadS} s ahead`);
  }
  if (request.stop_time !== undefined) {
    if (!periodic) return reject('invalid-field', 'stop_time needs an interval');
    if (request.stop_time <= Math.max(now, request.start_time ?? 0)) return reject('invalid-field', 'stop_time must lie after now and after start_time');
  }
  return undefined;
}

/** Validates one command payload: a measurement request or a stop request. */
export function parseCommand(payload: Uint8Array, context: ValidationContext): Validated<Command> {
  const parsed = parseJsonObject(payload, context.limits.maxPayloadBytes);
  if (!parsed.ok) return parsed;
  const object = parsed.value;
  const type = object['type'];
  if (type === undefined) return reject('missing-field', 'type is required');
  if (typeof type !== 'string') return reject('invalid-field', 'type must be a string');
  if (type === 'stop') {
    const failure = checkFields(
      object,
      {
        type: () => undefined,
        req_id: (value, field) => (typeof value === 'string' && REQUEST_ID.test(value) ? undefined : reject('invalid-field', `${field} must be a request id`)),
      },
      ['req_id'],
    );
    return failure ?? { ok: true, value: { kind: 'stop', request: object as unknown as StopRequest } };
  }
  if (type !== 'smtp') return reject('unsupported-type', `type ${quote(type)} is not supported`);
  const failure = checkFields(object, { type: () => undefined, ...measurementChecks(context.limits) }, ['target']);
  if (failure) return failure;
  const request = object as unknown as MeasurementRequest;
  return checkMeasurement(request, context) ?? { ok: true, value: { kind: 'measure', request } };
}

/** Longest result id taken from a result-ack (ours are 36-character UUIDs). */
const MAX_RESULT_ID = 64;

/** Validates the controller's result-ack: `{"result_ids": [...]}` with a bounded list. */
export function parseResultAck(payload: Uint8Array, maxIds: number): Validated<string[]> {
  // Each id at its longest, quoted and followed by a comma, plus the object around them.
  const parsed = parseJsonObject(payload, maxIds * (MAX_RESULT_ID + 3) + 32);
  if (!parsed.ok) return parsed;
  const failure = checkFields(
    parsed.value,
    {
      result_ids: (value, field) =>
        Array.isArray(value) && value.length <= maxIds && value.every((id) => typeof id === 'string' && id.length <= MAX_RESULT_ID)
          ? undefined
          : reject('invalid-field', `${field} must be an array of at most ${maxIds} ids`),
    },
    ['result_ids'],
  );
  return failure ?? { ok: true, value: parsed.value['result_ids'] as string[] };
}
