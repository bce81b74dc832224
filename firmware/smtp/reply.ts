// SMTP reply reader (RFC 5321 4.2, 4.5.3.1.5; RFC 3463 enhanced status codes).
//
// Bytes go in with `feed`; complete replies come out of `next`, one at a time, so the session
// can stop reading at any reply boundary (after a STARTTLS 220 the bytes still held are
// handed back by `takeRemainder` and never parsed as SMTP; RFC 3207 6).
//
// Rules, and why:
// - A reply is one or more lines "NNN-text" ending with a line "NNN text" or "NNN" alone; every
//   line carries the same code (4.2.1). A bare "250" is a complete final line: readers that
//   want a space after the code hang on it.
// - Lines end with CRLF (2.3.8). A bare LF is accepted, because real servers send it, and
//   recorded so the result says so.
// - A reply line is at most 512 octets including CRLF (4.5.3.1.5); the cap is a limit, so an
//   endless line costs at most that many buffered bytes before it is reported.
// - Lines per reply are capped: a 60-line EHLO is fine, an endless multi-line reply is not.

import { printable } from './text';

export interface ReplyLimits {
  /** longest reply line, CRLF included (RFC 5321 4.5.3.1.5: 512) */
  maxLineOctets: number;
  /** most lines in one multi-line reply */
  maxLinesPerReply: number;
}

export const DEFAULT_REPLY_LIMITS: ReplyLimits = { maxLineOctets: 512, maxLinesPerReply: 100 };

export interface ReplyLine {
  /** the whole line, printable, without its line ending */
  raw: string;
  /** the text after "NNN-" or "NNN ", printable */
  text: string;
  /** the time given to `next` when this line was completed */
  at: number;
}

export interface ParsedReply {
  code: number;
  enhanced?: string;
  lines: ReplyLine[];
  /** some line of the reply ended with LF alone */
  bareLf: boolean;
}

export type ReplyErrorCode = 'line-too-long' | 'too-many-lines' | 'malformed-reply' | 'code-mismatch';

export interface ReplyError {
  error: ReplyErrorCode;
  /** the offending line (bounded by the line limit), printable */
  line: string;
}

export type ReplyEvent = { reply: ParsedReply } | ReplyError;

const LF = 0x0a;
const CR = 0x0d;
const HYPHEN = 0x2d;
const SPACE = 0x20;

// RFC 3463 2: class.subject.detail, class 2, 4 or 5, subject and detail 1 to 3 digits.
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?= |$)/;

function digit(b: number | undefined): number {
  return b !== undefined && b >= 0x30 && b <= 0x39 ? b - 0x30 : -1;
}

export class ReplyParser {
  private pending: Buffer = Buffer.alloc(0);
  private lines: ReplyLine[] = [];
  private code = 0;
  private bareLf = false;
  private failed: ReplyError | null = null;

  constructor(private readonly limits: ReplyLimits = DEFAULT_REPLY_LIMITS) {}

  feed(bytes: Uint8Array): void {
    if (this.failed) return;
    const joined = this.pending.length === 0 ? Buffer.from(bytes) : Buffer.concat([this.pending, bytes]);
    // A line past the cap is an error whatever follows it, so of a line without its LF only
    // the first maxLineOctets bytes are kept: an endless line never costs more than that.
    const tailStart = joined.lastIndexOf(LF) + 1;
    const keep = tailStart + this.limits.maxLineOctets;
    this.pending = joined.length > keep ? Buffer.from(joined.subarray(0, keep)) : joined;
  }

  /** Bytes fed but not yet part of a complete line. */
  get buffered(): number {
    return this.pending.length;
  }

  /** A reply has begun and is not complete: some of its lines or bytes are held. */
  get inReply(): boolean {
    return this.pending.length > 0 || this.lines.length > 0;
  }

  /** Hands back the unparsed bytes and forgets them. */
  takeRemainder(): Buffer {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest;
  }

  /** The next complete reply or error, or null when more bytes are needed. */
  next(now: number): ReplyEvent | null {
    if (this.failed) return this.failed;
    for (;;) {
      const end = this.pending.indexOf(LF);
      if (end < 0) {
        if (this.pending.length >= this.limits.maxLineOctets) {
          return this.fail('line-too-long', this.pending.subarray(0, this.limits.maxLineOctets));
        }
        return null;
      }
      if (end + 1 > this.limits.maxLineOctets) {
        return this.fail('line-too-long', this.pending.subarray(0, this.limits.maxLineOctets));
      }
      const crlf = end > 0 && this.pending[end - 1] === CR;
      const line = this.pending.subarray(0, crlf ? end - 1 : end);
      this.pending = this.pending.subarray(end + 1);
      if (!crlf) this.bareLf = true;
      const event = this.takeLine(line, now);
      if (event) return event;
    }
  }

  private takeLine(line: Buffer, now: number): ReplyEvent | null {
    // RFC 5321 4.2: the first digit is 2 to 5, the second 0 to 5, the third any digit.
    const d1 = digit(line[0]);
    const d2 = digit(line[1]);
    const d3 = digit(line[2]);
    if (d1 < 2 || d1 > 5 || d2 < 0 || d2 > 5 || d3 < 0) return this.fail('malformed-reply', line);
    const code = d1 * 100 + d2 * 10 + d3;
    if (this.lines.length > 0 && code !== this.code) return this.fail('code-mismatch', line);
    if (this.lines.length >= this.limits.maxLinesPerReply) return this.fail('too-many-lines', line);
    this.code = code;
    const separator = line[3];
    // After the code: "-" continues, " " or nothing ends. Anything else ends the reply too,
    // with the text taken from right after the code, so a sloppy final line never stalls us.
    const textStart = separator === HYPHEN || separator === SPACE ? 4 : 3;
    // The code and separator are plain ASCII, one character each, so the text is a suffix of raw.
    const raw = printable(line);
    this.lines.push({ raw, text: raw.slice(Math.min(textStart, line.length)), at: now });
    if (separator === HYPHEN) return null;
    const reply: ParsedReply = { code, lines: this.lines, bareLf: this.bareLf };
    const enhanced = ENHANCED.exec(this.lines[0]?.text ?? '');
    // RFC 3463 2 / RFC 2034 4: the enhanced code's class must agree with the reply's class.
    if (enhanced && Number(enhanced[1]) === d1) reply.enhanced = enhanced[0];
    this.lines = [];
    this.code = 0;
    this.bareLf = false;
    return { reply };
  }

  private fail(error: ReplyErrorCode, line: Uint8Array): ReplyError {
    this.failed = { error, line: printable(line) };
    return this.failed;
  }
}
