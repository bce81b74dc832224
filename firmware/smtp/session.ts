// The SMTP client session, as a pure state machine.
//
// Theory of operation. The session never touches a socket, a timer or the clock. The driver
// tells it what happened (`connected`, `receive` bytes, `closed`, `tlsEstablished`,
// `tlsFailed`, `timerExpired`), each with the current monotonic time, and every call returns
// the actions the driver must carry out, in order:
//   write     send these bytes on the current stream (plain or TLS)
//   start-tls wrap the stream in TLS now; stop delivering plaintext
//   arm-timer (re)arm the one phase timer; a new arm replaces the old one
//   close     the session is over: close the stream, clear every timer
// After `close` the session ignores further input; `record` holds what was seen.
//
// The conversation (RFC 5321, RFC 3207):
//   banner --220--> EHLO --250--> STARTTLS --220--> TLS --> EHLO --250--> QUIT
//                     |  5xx --> HELO (RFC 5321 4.1.4: fall back when EHLO is refused)
//                     |  250 without STARTTLS (or mode plain) --> QUIT
// A 554 greeting gets QUIT and we read the reply (RFC 5321 3.1); a 421 anywhere means the
// server is closing (RFC 5321 3.8), so we close too. Any other unexpected reply ends the
// session with a stable status; if the reply was well formed we still say QUIT politely.
// Implicit TLS (port 465, RFC 8314 3.3) starts with TLS before the banner.

import { hasCapability, parseCapabilities } from './capabilities';
import { DEFAULT_REPLY_LIMITS, type ParsedReply, ReplyParser, type ReplyLimits } from './reply';
import { printable, printableString } from './text';
import type { EhloReply, Phase, Reply, SmtpResult, Status, TranscriptDirection } from '../result';
import { ms } from '../result';

export type Mode = SmtpResult['mode'];

export interface PhaseTimeouts {
  banner: number;
  command: number;
  tls: number;
  quit: number;
}

export const DEFAULT_PHASE_TIMEOUTS: PhaseTimeouts = { banner: 10_000, command: 10_000, tls: 10_000, quit: 2_000 };

export interface SessionLimits extends ReplyLimits {
  /** bytes read from the server in the whole measurement, plaintext and TLS */
  maxBytes: number;
  /** transcript entries kept */
  maxTranscript: number;
  /** plaintext kept (printable) when the server talks after its STARTTLS 220 */
  maxPlaintextAfterStarttls: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  ...DEFAULT_REPLY_LIMITS,
  // A whole conversation is a few KiB; 64 KiB leaves room for a 100-line EHLO of 512-octet
  // lines inside TLS and keeps 200 concurrent floods within the probe's memory budget.
  maxBytes: 64 * 1024,
  maxTranscript: 400,
  maxPlaintextAfterStarttls: 512,
};

export interface SessionConfig {
  mode: Mode;
  /** the measurement's start on the driver's monotonic clock: transcript times count from it */
  startedAt: number;
  timeouts: PhaseTimeouts;
  limits: SessionLimits;
  transcript: boolean;
}

export type Action =
  | { type: 'write'; data: Buffer }
  | { type: 'start-tls' }
  | { type: 'arm-timer'; ms: number }
  | { type: 'close' };

/** What the session saw: the driver copies this into the result. */
export type SessionRecord = Pick<
  SmtpResult,
  'status' | 'phase' | 'err' | 'banner' | 'ehlo' | 'helo' | 'starttls' | 'ehlo_tls' | 'quit' | 'plaintext_after_starttls' | 'bytes_received' | 'transcript'
> & {
  /** some reply line ended with a bare LF */
  bare_lf: boolean;
};

type State = Phase | 'done' | 'idle';

export class SmtpSession {
  readonly record: SessionRecord;
  private state: State = 'idle';
  private parser: ReplyParser;
  private heloName = '';
  private sentAt = 0;
  /** whether the session has ended with a status but is still waiting for the QUIT reply */
  private ending = false;
  private transcriptFull = false;

  constructor(private readonly config: SessionConfig) {
    this.parser = new ReplyParser(config.limits);
    this.record = { status: 'ok', phase: 'connect', bare_lf: false, bytes_received: 0 };
    if (config.transcript) this.record.transcript = [];
  }

  get done(): boolean {
    return this.state === 'done';
  }

  /** The TCP connection is up. `heloName` is the EHLO argument (RFC 5321 4.1.4). */
  connected(now: number, heloName: string): Action[] {
    if (this.state !== 'idle') return [];
    this.heloName = heloName;
    this.sentAt = now;
    if (this.config.mode === 'implicit-tls') {
      this.enter('tls');
      return [{ type: 'start-tls' }, this.arm('tls')];
    }
    this.enter('banner');
    return [this.arm('banner')];
  }

  receive(bytes: Uint8Array, now: number): Action[] {
    if (!this.readingReplies()) return [];
    // Bytes up to the cap are still read, so what is recorded before the cap does not depend
    // on how the stream happened to be split into chunks.
    const room = Math.max(0, this.config.limits.maxBytes - this.record.bytes_received);
    this.record.bytes_received += bytes.length;
    this.parser.feed(bytes.length > room ? bytes.subarray(0, room) : bytes);
    const actions: Action[] = [];
    while (this.readingReplies()) {
      const event = this.parser.next(now);
      if (!event) break;
      if ('error' in event) {
        this.note(now, 's', event.line);
        const status: Status = event.error === 'line-too-long' || event.error === 'too-many-lines' ? 'limit-exceeded' : 'protocol-error';
        return [...actions, ...this.finish(now, status, event.error)];
      }
      actions.push(...this.onReply(event.reply, now));
    }
    if (this.record.bytes_received > this.config.limits.maxBytes && this.state !== 'done') {
      actions.push(...this.finish(now, 'limit-exceeded', 'bytes-exceeded'));
    }
    return actions;
  }

  /** Replies are read in every state but before the start, during TLS and after the end. */
  private readingReplies(): boolean {
    return this.state !== 'done' && this.state !== 'idle' && this.state !== 'tls';
  }

  /** The server closed the stream: EOF, or a reset named by `cause` (an errno code). */
  closed(now: number, cause?: string): Action[] {
    if (this.state === 'done' || this.state === 'idle') return [];
    if (this.state === 'quit') return this.close(now);
    return this.finish(now, 'closed', cause ?? (this.parser.inReply ? 'eof-in-reply' : 'eof'));
  }

  tlsEstablished(now: number): Action[] {
    if (this.state !== 'tls') return [];
    // RFC 3207 4.2: after TLS the client discards what it knew and starts over; a new
    // parser guarantees no plaintext byte is read as part of the protected conversation.
    this.parser = new ReplyParser(this.config.limits);
    if (this.config.mode === 'implicit-tls') {
      this.enter('banner');
      this.sentAt = now;
      return [this.arm('banner')];
    }
    return this.command(now, 'ehlo_tls', `EHLO ${this.heloName}`);
  }

  /** The TLS handshake failed; `code` is a stable error code from the driver. */
  tlsFailed(now: number, code: string): Action[] {
    if (this.state !== 'tls') return [];
    return this.finish(now, 'tls-failed', code);
  }

  /** The phase timer or the measurement deadline passed, or the caller aborted. */
  timerExpired(now: number, which: 'phase' | 'deadline' | 'aborted'): Action[] {
    if (this.state === 'done' || this.state === 'idle') return [];
    if (this.state === 'quit') return this.close(now);
    return this.finish(now, 'io-timeout', which === 'phase' ? `${this.state}-timeout` : which);
  }

  private onReply(parsed: ParsedReply, now: number): Action[] {
    for (const line of parsed.lines) this.note(line.at, 's', line.raw);
    if (parsed.bareLf) this.record.bare_lf = true;
    const reply: Reply = { code: parsed.code, ...(parsed.enhanced ? { enhanced: parsed.enhanced } : {}), lines: parsed.lines.map((l) => l.text), rt: ms(now - this.sentAt) };
    const code = parsed.code;
    switch (this.state) {
      case 'banner':
        this.record.banner = reply;
        if (code === 220) return this.command(now, 'ehlo', `EHLO ${this.heloName}`);
        return this.refused(now, code);
      case 'ehlo': {
        const ehlo = this.ehloReply(reply, parsed);
        this.record.ehlo = ehlo;
        if (code === 250) {
          if (this.config.mode === 'starttls' && hasCapability(ehlo.capabilities, 'STARTTLS')) {
            return this.command(now, 'starttls', 'STARTTLS');
          }
          return this.quit(now);
        }
        // RFC 5321 4.1.4: a server that does not support EHLO answers 500/502 (or refuses
        // with another 5xx); the client then falls back to HELO.
        if (code >= 500 && code < 600) return this.command(now, 'helo', `HELO ${this.heloName}`);
        return this.refused(now, code);
      }
      case 'helo':
        this.record.helo = reply;
        if (code === 250) return this.quit(now);
        return this.refused(now, code);
      case 'starttls':
        this.record.starttls = reply;
        if (code === 220) {
          // RFC 3207 6: nothing the server sends in plaintext after its 220 may be taken as
          // part of the TLS session; it is recorded, bounded, and dropped.
          const rest = this.parser.takeRemainder();
          if (rest.length > 0) {
            const keep = rest.subarray(0, this.config.limits.maxPlaintextAfterStarttls);
            this.record.plaintext_after_starttls = printable(keep);
            this.note(now, 'i', `discarded ${rest.length} plaintext bytes after STARTTLS 220`);
          }
          this.enter('tls');
          this.sentAt = now;
          return [{ type: 'start-tls' }, this.arm('tls')];
        }
        // 454 (TLS not available), 501, 5xx: STARTTLS refused after it was offered. The
        // measurement itself completed, so the session ends normally.
        if (code === 421) return this.finish(now, 'rejected', 'service-closing');
        if (code >= 400) return this.quit(now);
        return this.unexpected(now);
      case 'ehlo_tls':
        this.record.ehlo_tls = this.ehloReply(reply, parsed);
        if (code === 250) return this.quit(now);
        return this.refused(now, code);
      case 'quit':
        this.record.quit = reply;
        return this.close(now);
      default:
        return [];
    }
  }

  private ehloReply(reply: Reply, parsed: ParsedReply): EhloReply {
    if (reply.code !== 250) return { ...reply, capabilities: {} };
    const { capabilities, invalid } = parseCapabilities(parsed.lines);
    return { ...reply, capabilities, ...(invalid.length > 0 ? { invalid_lines: invalid } : {}) };
  }

  /** A 4xx/5xx that ends the conversation: 421 closes (RFC 5321 3.8), the rest get QUIT. */
  private refused(now: number, code: number): Action[] {
    if (code === 421) return this.finish(now, 'rejected', 'service-closing');
    if (code >= 400 && code < 600) {
      this.setEnd('rejected', `reply-${code}`);
      return this.quit(now);
    }
    return this.unexpected(now);
  }

  private unexpected(now: number): Action[] {
    this.setEnd('protocol-error', 'unexpected-reply');
    return this.quit(now);
  }

  private setEnd(status: Status, err: string): void {
    this.record.status = status;
    this.record.phase = this.state as Phase;
    this.record.err = err;
    this.ending = true;
  }

  private quit(now: number): Action[] {
    if (!this.ending) this.record.phase = 'quit';
    return this.command(now, 'quit', 'QUIT');
  }

  private command(now: number, phase: Phase, line: string): Action[] {
    this.enter(phase);
    this.sentAt = now;
    this.note(now, 'c', printableString(line));
    return [{ type: 'write', data: Buffer.from(line + '\r\n', 'latin1') }, this.arm(phase)];
  }

  private arm(phase: Phase): Action {
    const t = this.config.timeouts;
    const timeout = phase === 'banner' ? t.banner : phase === 'tls' ? t.tls : phase === 'quit' ? t.quit : t.command;
    return { type: 'arm-timer', ms: timeout };
  }

  private enter(state: State): void {
    this.state = state;
    if (!this.ending && state !== 'done' && state !== 'idle') this.record.phase = state;
  }

  /** Ends the session now with a status, without QUIT (the stream is unusable or unsafe). */
  private finish(now: number, status: Status, err: string): Action[] {
    // Once the session has its outcome (a rejection, or a completed handshake now at QUIT),
    // trouble while saying goodbye does not change it.
    if (!this.ending && this.state !== 'quit') {
      this.record.status = status;
      this.record.phase = this.state as Phase;
      this.record.err = err;
    }
    this.note(now, 'i', `${status}: ${err}`);
    return this.close(now);
  }

  private close(now: number): Action[] {
    if (this.state === 'done') return [];
    if (this.parser.buffered > 0 && this.state !== 'tls') {
      this.note(now, 'i', `unparsed: ${printable(this.parser.takeRemainder().subarray(0, this.config.limits.maxLineOctets))}`);
    }
    this.state = 'done';
    return [{ type: 'close' }];
  }

  private note(at: number, direction: TranscriptDirection, text: string): void {
    const transcript = this.record.transcript;
    if (!transcript || this.transcriptFull) return;
    if (transcript.length >= this.config.limits.maxTranscript - 1) {
      this.transcriptFull = true;
      transcript.push([ms(at - this.config.startedAt), 'i', 'transcript-truncated']);
      return;
    }
    transcript.push([ms(at - this.config.startedAt), direction, text]);
  }
}
