// EHLO capabilities (RFC 5321 4.1.1.1): keyword -> parameters, matched whole and case-insensitively.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { hasCapability, hasMangledStarttls, parseCapabilities, type ParsedCapabilities } from '../../firmware/smtp/capabilities';
import { ReplyParser, type ReplyLine } from '../../firmware/smtp/reply';

/** The lines of one EHLO reply, read by the real reply parser: greeting first, then one line per keyword. */
function ehloLines(keywordLines: readonly string[]): ReplyLine[] {
  const all = ['mx.test greets probe.test', ...keywordLines];
  const parser = new ReplyParser();
  parser.feed(Buffer.from(all.map((l, i) => `250${i === all.length - 1 ? ' ' : '-'}${l}\r\n`).join(''), 'latin1'));
  const event = parser.next(0);
  assert.ok(event && 'reply' in event, JSON.stringify(event));
  return event.reply.lines;
}

const parseEhlo = (...keywordLines: string[]): ParsedCapabilities => parseCapabilities(ehloLines(keywordLines));

describe('parseCapabilities', () => {
  it('maps each keyword to its parameters, the greeting line excluded', () => {
    const { capabilities, invalid } = parseEhlo('PIPELINING', 'SIZE 10240000', 'AUTH PLAIN LOGIN', 'ENHANCEDSTATUSCODES', 'STARTTLS');
    assert.deepEqual(capabilities, {
      PIPELINING: [],
      SIZE: ['10240000'],
      AUTH: ['PLAIN', 'LOGIN'],
      ENHANCEDSTATUSCODES: [],
      STARTTLS: [],
    });
    assert.deepEqual(invalid, []);
    assert.equal(hasCapability(capabilities, 'MX.TEST'), false, 'the greeting is not a keyword');
  });

  it('gives a single-line EHLO reply no capabilities', () => {
    assert.deepEqual(parseCapabilities(ehloLines([])), { capabilities: {}, invalid: [] });
  });

  it('matches keywords case-insensitively and stores them upper-cased', () => {
    for (const spelled of ['starttls', 'StartTLS', 'STARTTLS', 'sTaRtTlS']) {
      const { capabilities } = parseEhlo(spelled, 'size 1000');
      assert.deepEqual(Object.keys(capabilities), ['STARTTLS', 'SIZE'], spelled);
      assert.equal(hasCapability(capabilities, 'starttls'), true);
      assert.equal(hasCapability(capabilities, 'STARTTLS'), true);
      assert.deepEqual(capabilities.SIZE, ['1000'], 'parameters keep their case');
    }
  });

  it('never takes a keyword that merely contains STARTTLS for STARTTLS', () => {
    for (const line of ['XSTARTTLS', 'STARTTLSX', 'X-STARTTLS', 'STARTTLS-X', 'STARTTLS2', 'XFOO STARTTLS', 'STARTTL', 'START TLS']) {
      const { capabilities } = parseEhlo('PIPELINING', line);
      assert.equal(hasCapability(capabilities, 'STARTTLS'), false, line);
    }
  });

  it('does not take the greeting text for a capability even when it says STARTTLS', () => {
    const parser = new ReplyParser();
    parser.feed(Buffer.from('250-STARTTLS\r\n250 PIPELINING\r\n'));
    const event = parser.next(0);
    assert.ok(event && 'reply' in event);
    assert.equal(hasCapability(parseCapabilities(event.reply.lines).capabilities, 'STARTTLS'), false);
  });

  it('collects lines that are not ehlo-lines, in order, and keeps the valid ones', () => {
    const { capabilities, invalid } = parseEhlo('AUTH=LOGIN PLAIN', ' STARTTLS', '-DASH', '', 'SIZE 100', 'bad\x00key', 'ü8BITMIME', 'DSN');
    assert.deepEqual(invalid, ['AUTH=LOGIN PLAIN', ' STARTTLS', '-DASH', '', 'bad\\x00key', '\\xfc8BITMIME']);
    assert.deepEqual(capabilities, { SIZE: ['100'], DSN: [] });
  });

  it('keeps the first parameters of a repeated keyword', () => {
    assert.deepEqual(parseEhlo('SIZE 100', 'size 200').capabilities, { SIZE: ['100'] });
  });

  it('drops empty parameters between repeated spaces', () => {
    assert.deepEqual(parseEhlo('AUTH  PLAIN   LOGIN ').capabilities, { AUTH: ['PLAIN', 'LOGIN'] });
  });

  it('treats keywords named like object members as plain keywords', () => {
    const { capabilities } = parseEhlo('CONSTRUCTOR', 'toString 1');
    assert.deepEqual(capabilities, { CONSTRUCTOR: [], TOSTRING: ['1'] });
    assert.equal(hasCapability(parseEhlo('SIZE 1').capabilities, 'constructor'), false);
    assert.equal(hasCapability(parseEhlo('SIZE 1').capabilities, '__proto__'), false);
    assert.equal(JSON.stringify(capabilities), '{"CONSTRUCTOR":[],"TOSTRING":["1"]}');
  });

  it('never finds STARTTLS in a keyword that is not STARTTLS (property)', () => {
    const keywordChar = fc.constantFrom(...'ABCSTLRXstlr0129-'.split(''));
    const keyword = fc.oneof(
      fc.constantFrom('STARTTLS', 'starttls', 'XSTARTTLS', 'STARTTLSX', 'STARTTLS-', 'S-TARTTLS'),
      fc.tuple(fc.constantFrom('A', 'S', 'X', 's', '1'), fc.string({ unit: keywordChar, maxLength: 12 })).map(([a, b]) => a + b),
    );
    fc.assert(
      fc.property(fc.array(keyword, { maxLength: 10 }), (keywords) => {
        const { capabilities, invalid } = parseEhlo(...keywords);
        assert.deepEqual(invalid, []);
        assert.deepEqual(Object.keys(capabilities).sort(), [...new Set(keywords.map((k) => k.toUpperCase()))].sort());
        assert.equal(hasCapability(capabilities, 'STARTTLS'), keywords.some((k) => k.toUpperCase() === 'STARTTLS'));
      }),
      { numRuns: 300 },
    );
  });
});

describe('hasMangledStarttls', () => {
  const cases: [string, boolean][] = [
    ['XXXXXXXA', true],
    ['XXXXXXXX', true],
    ['xxxxxxxa', true],
    ['STARTTLS', false],
    ['XXXXXXX', false],
    ['XXXXXXXXA', false],
    ['XXXXXXXB', false],
    ['AXXXXXXX', false],
    ['XXXXXXXXX', false],
  ];
  for (const [keyword, mangled] of cases) {
    it(`${keyword} -> ${mangled}`, () => {
      const { capabilities } = parseEhlo('PIPELINING', keyword, 'SIZE 1000');
      assert.equal(hasMangledStarttls(capabilities), mangled);
      assert.equal(hasCapability(capabilities, 'STARTTLS'), keyword === 'STARTTLS');
    });
  }

  it('finds nothing in a reply without capabilities', () => {
    assert.equal(hasMangledStarttls(parseEhlo().capabilities), false);
  });
});
