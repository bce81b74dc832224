// ReplyParser: SMTP replies from bytes (RFC 5321 4.2, 4.5.3.1.5; RFC 3463).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_REPLY_LIMITS, type ReplyEvent, ReplyParser, type ReplyLimits } from '../../firmware/smtp/reply';

const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

/** Feeds the chunks in order, draining after each, and returns every event up to the first error. */
function parseChunks(chunks: readonly Uint8Array[], limits: ReplyLimits = DEFAULT_REPLY_LIMITS, now = 0): ReplyEvent[] {
  const parser = new ReplyParser(limits);
  const events: ReplyEvent[] = [];
  for (const chunk of chunks) {
    parser.feed(chunk);
    for (let event = parser.next(now); event; event = parser.next(now)) {
      events.push(event);
      if ('error' in event) return events;
    }
  }
  return events;
}

const parse = (text: string, limits?: ReplyLimits): ReplyEvent[] => parseChunks([bytes(text)], limits);

function onlyReply(text: string) {
  const events = parse(text);
  assert.equal(events.length, 1, `one event expected from ${JSON.stringify(text)}`);
  const event = events[0] as ReplyEvent;
  assert.ok('reply' in event, `a reply expected, got ${JSON.stringify(event)}`);
  return event.reply;
}

function everyByte(data: Uint8Array): Buffer[] {
  return Array.from(data, (b) => Buffer.from([b]));
}

describe('ReplyParser: replies', () => {
  it('reads a single-line reply, its text and the time its line completed', () => {
    const parser = new ReplyParser();
    parser.feed(bytes('220 mx.test ESMTP ready\r\n'));
    assert.deepEqual(parser.next(12.5), {
      reply: { code: 220, lines: [{ raw: '220 mx.test ESMTP ready', text: 'mx.test ESMTP ready', at: 12.5 }], bareLf: false },
    });
    assert.equal(parser.next(13), null);
  });

  it('reads a multi-line reply as one reply with every line', () => {
    const reply = onlyReply('250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 STARTTLS\r\n');
    assert.equal(reply.code, 250);
    assert.deepEqual(
      reply.lines.map((l) => l.text),
      ['mx.test greets you', 'PIPELINING', 'SIZE 10240000', 'STARTTLS'],
    );
  });

  it('waits for the final line of a multi-line reply', () => {
    const parser = new ReplyParser();
    parser.feed(bytes('250-mx.test\r\n250-PIPELINING\r\n'));
    assert.equal(parser.next(0), null);
    assert.equal(parser.inReply, true);
    parser.feed(bytes('250 STARTTLS\r\n'));
    const event = parser.next(1);
    assert.ok(event && 'reply' in event);
    assert.equal(event.reply.lines.length, 3);
    assert.equal(parser.inReply, false);
  });

  it('takes "250" alone as a complete final line, single or after continuation lines', () => {
    assert.deepEqual(onlyReply('250\r\n').lines, [{ raw: '250', text: '', at: 0 }]);
    assert.deepEqual(
      onlyReply('250-mx.test\r\n250\r\n').lines.map((l) => l.text),
      ['mx.test', ''],
    );
    // The reply is complete the moment its line ends: no wait for a space or more text.
    const parser = new ReplyParser();
    parser.feed(bytes('250'));
    assert.equal(parser.next(0), null);
    parser.feed(bytes('\r\n'));
    assert.ok(parser.next(0));
  });

  it('ends the reply on a final line whose code is followed by something other than a space', () => {
    assert.deepEqual(onlyReply('250OK\r\n').lines.map((l) => l.text), ['OK']);
  });

  it('reads two replies that arrive in one chunk, in order', () => {
    const events = parse('220 mx.test ready\r\n250-mx.test\r\n250 STARTTLS\r\n');
    assert.deepEqual(
      events.map((e) => ('reply' in e ? [e.reply.code, e.reply.lines.length] : e)),
      [
        [220, 1],
        [250, 2],
      ],
    );
  });

  it('reports a code that changes inside a multi-line reply as code-mismatch, and stays failed', () => {
    const parser = new ReplyParser();
    parser.feed(bytes('250-mx.test\r\n251 STARTTLS\r\n220 ready\r\n'));
    const error = { error: 'code-mismatch', line: '251 STARTTLS' };
    assert.deepEqual(parser.next(0), error);
    assert.deepEqual(parser.next(1), error);
    parser.feed(bytes('250 more\r\n'));
    assert.deepEqual(parser.next(2), error);
  });

  it('reports a line that is not a reply line as malformed-reply', () => {
    for (const line of ['hello', '', '25', '2x0 ok', '199 low', '600 high', '260 second digit', '-250 x']) {
      assert.deepEqual(parse(`${line}\r\n`), [{ error: 'malformed-reply', line }], line);
    }
  });

  it('accepts a line ending in a bare LF and flags the reply that had one', () => {
    const events = parse('250-mx.test\n250 STARTTLS\r\n220 ready\r\n');
    assert.deepEqual(
      events.map((e) => 'reply' in e && [e.reply.code, e.reply.bareLf, e.reply.lines.map((l) => l.text)]),
      [
        [250, true, ['mx.test', 'STARTTLS']],
        [220, false, ['ready']],
      ],
    );
    assert.equal(onlyReply('220 ready\n').bareLf, true);
  });

  it('shows a CR inside a line and a CR before a bare LF as bytes of the text', () => {
    assert.deepEqual(onlyReply('220 a\rb\r\r\n').lines.map((l) => l.text), ['a\\x0db\\x0d']);
  });

  it('shows NUL and non-ASCII bytes as \\xNN and escapes the backslash', () => {
    const reply = onlyReply('220 mx\x00.test \xff\xfe \x1b[2J C:\\x00\r\n');
    assert.deepEqual(reply.lines, [
      {
        raw: '220 mx\\x00.test \\xff\\xfe \\x1b[2J C:\\\\x00',
        text: 'mx\\x00.test \\xff\\xfe \\x1b[2J C:\\\\x00',
        at: 0,
      },
    ]);
  });

  it('hands back the bytes after a reply with takeRemainder, and forgets them', () => {
    const parser = new ReplyParser();
    parser.feed(bytes('220 2.0.0 go ahead\r\n250 injected\r\n\x16\x03\x01'));
    const event = parser.next(0);
    assert.ok(event && 'reply' in event && event.reply.code === 220);
    assert.deepEqual(parser.takeRemainder(), bytes('250 injected\r\n\x16\x03\x01'));
    assert.equal(parser.buffered, 0);
    assert.equal(parser.inReply, false);
    assert.equal(parser.next(1), null);
  });
});

describe('ReplyParser: enhanced status codes (RFC 3463)', () => {
  const cases: [string, string | undefined][] = [
    ['250 2.0.0 Ok\r\n', '2.0.0'],
    ['550 5.7.1 Relaying denied\r\n', '5.7.1'],
    ['421 4.4.2 mx.test closing\r\n', '4.4.2'],
    ['250 2.0.0\r\n', '2.0.0'],
    ['554-5.7.1 You are listed\r\n554 5.7.1 at dnsbl.test\r\n', '5.7.1'],
    ['552 5.3.4 Message too big\r\n', '5.3.4'],
    ['250 2.123.999 wide fields\r\n', '2.123.999'],
    // The class must agree with the reply code's first digit.
    ['550 4.7.1 try later\r\n', undefined],
    ['250 5.0.0 odd\r\n', undefined],
    // Not an enhanced code at all.
    ['250 mx.test\r\n', undefined],
    ['250 2.0.0Ok\r\n', undefined],
    ['250 2.1000.0 subject too long\r\n', undefined],
    ['250 2.0 short\r\n', undefined],
    ['250 3.0.0 no such class\r\n', undefined],
    ['250  2.0.0 two spaces\r\n', undefined],
  ];
  for (const [input, enhanced] of cases) {
    it(`${JSON.stringify(input)} -> ${enhanced ?? 'none'}`, () => {
      const reply = onlyReply(input);
      assert.equal(reply.enhanced, enhanced);
      assert.equal('enhanced' in reply, enhanced !== undefined);
    });
  }
});

describe('ReplyParser: limits', () => {
  const limit = DEFAULT_REPLY_LIMITS.maxLineOctets;

  it('accepts a line of exactly 512 octets with its CRLF or its LF', () => {
    const text = 'x'.repeat(limit - 6);
    assert.equal(onlyReply(`250 ${text}\r\n`).lines[0]?.text, text);
    assert.equal(onlyReply(`250 ${text}x\n`).lines[0]?.text, `${text}x`);
  });

  it('reports a 513-octet line as line-too-long with its first 512 octets', () => {
    const line = `250 ${'y'.repeat(limit - 5)}`;
    // 511 octets of text and the CR make the 512 octets shown; the LF is the 513th.
    assert.deepEqual(parse(`${line}\r\n`), [{ error: 'line-too-long', line: `${line}\\x0d` }]);
    // Split at every byte the outcome is the same.
    assert.deepEqual(parseChunks(everyByte(bytes(`${line}\r\n`))), parse(`${line}\r\n`));
  });

  it('fails an endless line once 512 bytes are buffered, and never holds more', () => {
    for (const chunkSize of [1, 100, 511, 513, 4096, 1 << 20]) {
      const parser = new ReplyParser();
      let fed = 0;
      let event: ReplyEvent | null = null;
      while (!event) {
        parser.feed(Buffer.alloc(chunkSize, 0x41));
        fed += chunkSize;
        assert.ok(parser.buffered <= limit, `buffered ${parser.buffered} with chunks of ${chunkSize}`);
        event = parser.next(0);
        if (!event) assert.ok(fed < limit, `no error after ${fed} bytes with chunks of ${chunkSize}`);
      }
      assert.deepEqual(event, { error: 'line-too-long', line: 'A'.repeat(limit) });
      assert.ok(fed < limit + chunkSize, `fed ${fed} with chunks of ${chunkSize}`);
      parser.feed(Buffer.alloc(10_000, 0x41));
      assert.ok(parser.buffered <= limit, 'a failed parser takes no more bytes');
    }
  });

  it('reads the complete replies before an endless line in the same chunk, then fails', () => {
    const parser = new ReplyParser();
    parser.feed(Buffer.concat([bytes('220 ready\r\n250 ok\r\n'), Buffer.alloc(100_000, 0x42)]));
    assert.ok(parser.buffered <= 19 + limit);
    assert.equal((parser.next(0) as { reply: { code: number } }).reply.code, 220);
    assert.equal((parser.next(0) as { reply: { code: number } }).reply.code, 250);
    assert.deepEqual(parser.next(0), { error: 'line-too-long', line: 'B'.repeat(limit) });
  });

  it('takes a 60-line EHLO reply', () => {
    const lines = ['mx.test', ...Array.from({ length: 58 }, (_, i) => `X-EXTENSION-${i}`), 'STARTTLS'];
    const text = lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}\r\n`).join('');
    assert.deepEqual(onlyReply(text).lines.map((l) => l.text), lines);
  });

  it('reports one line over the lines-per-reply cap as too-many-lines', () => {
    const limits = { maxLineOctets: 512, maxLinesPerReply: 60 };
    const reply = (n: number): string => '250-x\r\n'.repeat(n - 1) + '250 end\r\n';
    const ok = parse(reply(60), limits);
    assert.ok(ok.length === 1 && 'reply' in (ok[0] as ReplyEvent));
    assert.deepEqual(parse(reply(61), limits), [{ error: 'too-many-lines', line: '250 end' }]);
    const defaults = parse(reply(DEFAULT_REPLY_LIMITS.maxLinesPerReply + 1));
    assert.deepEqual(defaults, [{ error: 'too-many-lines', line: '250 end' }]);
  });

  it('stops an endless multi-line reply at the cap', () => {
    const parser = new ReplyParser({ maxLineOctets: 512, maxLinesPerReply: 10 });
    let event: ReplyEvent | null = null;
    let lines = 0;
    while (!event && lines < 1000) {
      parser.feed(bytes('250-more\r\n'));
      lines += 1;
      event = parser.next(0);
    }
    assert.deepEqual(event, { error: 'too-many-lines', line: '250-more' });
    assert.equal(lines, 11);
  });
});

// ---- properties -------------------------------------------------------------------------

interface ModelReply {
  code: number;
  texts: string[];
  endings: ('\r\n' | '\n')[];
  enhanced?: string;
}

const printableChar = fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c));

/** A reply a server could send: same code on every line, optional enhanced code, CRLF or LF. */
const modelReply: fc.Arbitrary<ModelReply> = fc
  .record({
    code: fc.tuple(fc.integer({ min: 2, max: 5 }), fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 9 })).map(([a, b, c]) => a * 100 + b * 10 + c),
    enhancedClass: fc.option(fc.constantFrom(2, 4, 5), { nil: undefined }),
    detail: fc.tuple(fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 999 })),
    // Each text starts with a letter so that only the generated prefix can be an enhanced code.
    texts: fc.array(fc.oneof(fc.constant(''), fc.tuple(fc.constantFrom('a', 'Z', 'm'), fc.string({ unit: printableChar, maxLength: 60 })).map(([a, b]) => a + b)), {
      minLength: 1,
      maxLength: 8,
    }),
    crlf: fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
  })
  .map(({ code, enhancedClass, detail, texts, crlf }) => {
    const prefix = enhancedClass === undefined ? '' : `${enhancedClass}.${detail[0]}.${detail[1]}`;
    const model: ModelReply = {
      code,
      texts: texts.map((t, i) => (i === 0 && prefix ? (t ? `${prefix} ${t}` : prefix) : t)),
      endings: texts.map((_, i) => (crlf[i] ? '\r\n' : '\n')),
    };
    if (prefix && enhancedClass === Math.floor(code / 100)) model.enhanced = prefix;
    return model;
  });

function encode(replies: readonly ModelReply[]): Buffer {
  return bytes(
    replies
      .map((r) => r.texts.map((t, i) => `${r.code}${i === r.texts.length - 1 ? ' ' : '-'}${t}${r.endings[i]}`).join(''))
      .join(''),
  );
}

/** Cuts the data at the given offsets (taken modulo its length). */
function cut(data: Buffer, offsets: readonly number[]): Buffer[] {
  const points = [...new Set(offsets.map((o) => (data.length === 0 ? 0 : o % data.length)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let start = 0;
  for (const p of points) {
    pieces.push(data.subarray(start, p));
    start = p;
  }
  pieces.push(data.subarray(start));
  return pieces;
}

describe('ReplyParser: properties', () => {
  it('reads any valid reply sequence as the server meant it', () => {
    fc.assert(
      fc.property(fc.array(modelReply, { maxLength: 6 }), (model) => {
        const events = parseChunks([encode(model)]);
        assert.deepEqual(
          events.map((e) => {
            assert.ok('reply' in e, JSON.stringify(e));
            return { code: e.reply.code, texts: e.reply.lines.map((l) => l.text), bareLf: e.reply.bareLf, enhanced: e.reply.enhanced };
          }),
          model.map((r) => ({
            code: r.code,
            texts: r.texts.map((t) => t.replace(/\\/g, '\\\\')),
            bareLf: r.endings.includes('\n'),
            enhanced: r.enhanced,
          })),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('gives the same replies however the stream is split (arbitrary cuts and every byte)', () => {
    fc.assert(
      fc.property(fc.array(modelReply, { maxLength: 5 }), fc.array(fc.nat(), { maxLength: 20 }), (model, offsets) => {
        const data = encode(model);
        const whole = parseChunks([data]);
        assert.deepEqual(parseChunks(cut(data, offsets)), whole);
        assert.deepEqual(parseChunks(everyByte(data)), whole);
      }),
      { numRuns: 200 },
    );
  });

  // Bytes that are mostly SMTP-shaped, with noise, so that every rule gets reached.
  const fragment = fc.oneof(
    fc.constantFrom('250-', '250 ', '250', '220 ', '554-', '551 ', '2.0.0 ', '\r\n', '\n', '\r', '\x00', '\xff', 'STARTTLS', 'x'.repeat(40)).map(bytes),
    fc.uint8Array({ maxLength: 40 }),
  );
  const arbitraryStream = fc.array(fc.array(fragment, { maxLength: 12 }).map((parts) => Buffer.concat(parts)), { maxLength: 12 });
  const smallLimits = fc.record({ maxLineOctets: fc.integer({ min: 4, max: 64 }), maxLinesPerReply: fc.integer({ min: 1, max: 6 }) });

  it('never throws on arbitrary bytes: only replies, one final error, or a wait with bounded buffering', () => {
    fc.assert(
      fc.property(arbitraryStream, smallLimits, (chunks, limits) => {
        const parser = new ReplyParser(limits);
        let failure: ReplyEvent | null = null;
        for (const chunk of chunks) {
          const before = parser.buffered;
          parser.feed(chunk);
          if (failure) {
            assert.equal(parser.buffered, before, 'a failed parser takes no more bytes');
            continue;
          }
          assert.ok(parser.buffered <= before + chunk.length && parser.buffered <= chunk.length + limits.maxLineOctets);
          for (let event = parser.next(0); event; event = parser.next(0)) {
            if ('error' in event) {
              assert.ok(['line-too-long', 'too-many-lines', 'malformed-reply', 'code-mismatch'].includes(event.error));
              assert.ok(event.line.length <= 4 * limits.maxLineOctets);
              failure = event;
              break;
            }
            const { code, lines } = event.reply;
            assert.ok(code >= 200 && code <= 559 && lines.length >= 1 && lines.length <= limits.maxLinesPerReply);
          }
          if (failure) {
            assert.deepEqual(parser.next(1), failure, 'an error is final');
          } else {
            assert.ok(parser.buffered < limits.maxLineOctets, 'waiting holds less than one line');
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('gives the same events for arbitrary bytes fed whole or byte by byte', () => {
    fc.assert(
      fc.property(arbitraryStream, smallLimits, (chunks, limits) => {
        const data = Buffer.concat(chunks);
        assert.deepEqual(parseChunks(everyByte(data), limits), parseChunks([data], limits));
      }),
      { numRuns: 300 },
    );
  });
});
