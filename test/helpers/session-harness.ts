// Drives the pure SmtpSession without sockets or clocks: the test plays the driver, with
// times it chooses. Two ways: a fixed list of steps (`runSteps`), or a scripted peer that
// answers each command the session writes (`converse`), with every answer split into pieces
// as the test asks, the way TCP may deliver it.

import assert from 'node:assert/strict';
import {
  type Action,
  DEFAULT_PHASE_TIMEOUTS,
  DEFAULT_SESSION_LIMITS,
  type SessionConfig,
  SmtpSession,
} from '../../firmware/smtp/session';

export const STARTED_AT = 1000;
export const HELO_NAME = 'probe.test';

export function newSession(config: Partial<SessionConfig> = {}): SmtpSession {
  return new SmtpSession({
    mode: 'starttls',
    startedAt: STARTED_AT,
    timeouts: DEFAULT_PHASE_TIMEOUTS,
    limits: DEFAULT_SESSION_LIMITS,
    transcript: false,
    ...config,
  });
}

/** Server bytes as a string: each char code is one byte, so "\xff" is the byte 0xff. */
export const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

export type Step =
  | { at: number; receive: string | Uint8Array }
  | { at: number; tlsUp: true }
  | { at: number; tlsFailed: string }
  | { at: number; eof: true; cause?: string }
  | { at: number; timer: 'phase' | 'deadline' | 'aborted' };

export interface Run {
  session: SmtpSession;
  /** the actions returned by `connected`, then by each step */
  perCall: Action[][];
  actions: Action[];
}

function apply(session: SmtpSession, step: Step): Action[] {
  if ('receive' in step) return session.receive(typeof step.receive === 'string' ? bytes(step.receive) : step.receive, step.at);
  if ('tlsUp' in step) return session.tlsEstablished(step.at);
  if ('tlsFailed' in step) return session.tlsFailed(step.at, step.tlsFailed);
  if ('eof' in step) return session.closed(step.at, step.cause);
  return session.timerExpired(step.at, step.timer);
}

/** Connects at STARTED_AT, then applies the steps in order. */
export function runSteps(steps: readonly Step[], config: Partial<SessionConfig> = {}): Run {
  const session = newSession(config);
  const perCall = [session.connected(STARTED_AT, HELO_NAME)];
  for (const step of steps) perCall.push(apply(session, step));
  return { session, perCall, actions: perCall.flat() };
}

/** The commands the session wrote, as text without CRLF. */
export function written(actions: readonly Action[]): string[] {
  return actions.flatMap((a) => {
    if (a.type !== 'write') return [];
    const text = a.data.toString('latin1');
    assert.ok(text.endsWith('\r\n'), `a command ends with CRLF: ${JSON.stringify(text)}`);
    return [text.slice(0, -2)];
  });
}

/**
 * The session ended with exactly one `close`, as its very last action, and from then on
 * every input is ignored and the record stays as it is.
 */
export function assertClosedOnce(session: SmtpSession, actions: readonly Action[]): void {
  assert.equal(actions.filter((a) => a.type === 'close').length, 1, `one close in ${JSON.stringify(actions.map((a) => a.type))}`);
  assert.equal(actions[actions.length - 1]?.type, 'close', 'close is the last action');
  assert.equal(session.done, true);
  const record = structuredClone(session.record);
  const late = 1e9;
  assert.deepEqual(
    [
      session.receive(bytes('250 late\r\n'), late),
      session.closed(late),
      session.timerExpired(late, 'phase'),
      session.timerExpired(late, 'deadline'),
      session.tlsEstablished(late),
      session.tlsFailed(late, 'late'),
      session.connected(late, HELO_NAME),
    ],
    [[], [], [], [], [], [], []],
  );
  assert.deepEqual(session.record, record);
}

// ---- a scripted peer ----------------------------------------------------------------------

/**
 * What the peer does when it is its turn: send these bytes and wait for the next command, or
 * send them (maybe none) and then close the stream or fall silent.
 */
export type Answer = string | { send: string; then: 'eof' | 'silent' };

export interface Peer {
  banner: Answer;
  ehlo: Answer;
  helo: Answer;
  starttls: Answer;
  /** the TLS handshake: up, or failed with a driver error code */
  tls: 'up' | { failed: string };
  /** the EHLO after TLS */
  ehloTls: Answer;
  quit: Answer;
}

export type Splitter = (data: Buffer) => Buffer[];

export const whole: Splitter = (data) => [data];
export const everyByte: Splitter = (data) => Array.from(data, (b) => Buffer.from([b]));
/** Pieces of the given sizes, used in turn (sizes of at least 1). */
export const inPieces =
  (sizes: readonly number[]): Splitter =>
  (data) => {
    const pieces: Buffer[] = [];
    for (let start = 0, i = 0; start < data.length; i++) {
      const size = Math.max(1, sizes[i % sizes.length] ?? 1);
      pieces.push(data.subarray(start, start + size));
      start += size;
    }
    return pieces;
  };

/**
 * Runs a whole conversation with the peer. The clock moves 1.5 ms per peer turn; all pieces
 * of one answer arrive at the same time, so splitting cannot change any timing. When the
 * peer stays silent the phase timer fires.
 */
export function converse(peer: Peer, split: Splitter, config: Partial<SessionConfig> = {}): Run {
  const session = newSession(config);
  const implicitTls = (config.mode ?? 'starttls') === 'implicit-tls';
  const perCall: Action[][] = [];
  const turns: (Answer | 'tls')[] = [];
  let inTls = false;
  let clock = STARTED_AT;
  const send = (text: string): void => {
    for (const piece of split(bytes(text))) take(session.receive(piece, clock));
  };

  const take = (actions: Action[]): void => {
    perCall.push(actions);
    for (const action of actions) {
      if (action.type === 'start-tls') turns.push('tls');
      if (action.type !== 'write') continue;
      const verb = action.data.toString('latin1').split(/[ \r]/)[0];
      if (verb === 'EHLO') turns.push(inTls && !implicitTls ? peer.ehloTls : peer.ehlo);
      else if (verb === 'HELO') turns.push(peer.helo);
      else if (verb === 'STARTTLS') turns.push(peer.starttls);
      else if (verb === 'QUIT') turns.push(peer.quit);
      else assert.fail(`unexpected command ${JSON.stringify(action.data.toString('latin1'))}`);
    }
  };

  take(session.connected(clock, HELO_NAME));
  if (!implicitTls) turns.push(peer.banner);
  while (!session.done) {
    const turn = turns.shift();
    clock += 1.5;
    if (turn === undefined) {
      take(session.timerExpired(clock, 'phase'));
    } else if (turn === 'tls') {
      if (peer.tls === 'up') {
        inTls = true;
        take(session.tlsEstablished(clock));
        if (implicitTls) turns.push(peer.banner);
      } else {
        take(session.tlsFailed(clock, peer.tls.failed));
      }
    } else if (typeof turn === 'string') {
      send(turn);
    } else {
      send(turn.send);
      if (session.done) break;
      clock += 1.5;
      take(turn.then === 'eof' ? session.closed(clock) : session.timerExpired(clock, 'phase'));
    }
  }
  return { session, perCall, actions: perCall.flat() };
}
