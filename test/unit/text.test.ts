// printable(): server bytes as they appear in results and on terminals.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { printable, printableString } from '../../firmware/smtp/text';

const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

/** Reads printable() output back into bytes; throws on anything printable() cannot produce. */
function unprintable(text: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch !== '\\') {
      out.push(ch.charCodeAt(0));
      continue;
    }
    if (text[i + 1] === '\\') {
      out.push(0x5c);
      i += 1;
    } else if (text[i + 1] === 'x' && /^[0-9a-f]{2}$/.test(text.slice(i + 2, i + 4))) {
      out.push(parseInt(text.slice(i + 2, i + 4), 16));
      i += 3;
    } else {
      throw new Error(`bad escape at ${i} in ${JSON.stringify(text)}`);
    }
  }
  return Buffer.from(out);
}

describe('printable', () => {
  it('keeps printable ASCII as it is', () => {
    assert.equal(printable(bytes('250-mx.test Hello [192.0.2.7] ~!')), '250-mx.test Hello [192.0.2.7] ~!');
  });

  it('shows NUL, controls, DEL and non-ASCII bytes as lower-case \\xNN', () => {
    assert.equal(printable(bytes('a\x00b\x1b[31mc\x7fd\xffe\x80')), 'a\\x00b\\x1b[31mc\\x7fd\\xffe\\x80');
    assert.equal(printable(bytes('\r\n\t')), '\\x0d\\x0a\\x09');
  });

  it('escapes the backslash so a literal "\\x00" in the text differs from a NUL byte', () => {
    assert.equal(printable(bytes('\\')), '\\\\');
    assert.equal(printable(bytes('\x00')), '\\x00');
    assert.equal(printable(bytes('\\x00')), '\\\\x00');
  });

  it('prints only the given range', () => {
    assert.equal(printable(bytes('250 ok\r\n'), 4, 6), 'ok');
    assert.equal(printable(bytes('250'), 3), '');
  });

  it('printableString shows non-ASCII text by its UTF-8 bytes', () => {
    assert.equal(printableString('mx.bücher.test'), 'mx.b\\xc3\\xbccher.test');
    assert.equal(printableString('a\r\nQUIT'), 'a\\x0d\\x0aQUIT');
  });

  it('output is always printable ASCII (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (input) => {
        assert.match(printable(input), /^[\x20-\x7e]*$/);
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips: the original bytes can always be read back (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (input) => {
        assert.deepEqual(unprintable(printable(input)), Buffer.from(input));
      }),
      { numRuns: 500 },
    );
  });

  it('different inputs never print the same, even when built to look alike (property)', () => {
    // Inputs drawn from backslashes, "x", hex digits and the bytes they could stand for.
    const lookalike = fc.uint8Array({ maxLength: 12 }).map((raw) => Buffer.from(raw.map((b) => [0x5c, 0x78, 0x30, 0x61, 0x00, 0x0a, 0x41][b % 7] as number)));
    fc.assert(
      fc.property(lookalike, lookalike, (a, b) => {
        fc.pre(!a.equals(b));
        assert.notEqual(printable(a), printable(b));
      }),
      { numRuns: 1000 },
    );
  });
});
