// Validation of controller commands and result-acks: every malformed input gets its stable
// reason code; valid requests come back as typed commands.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isAllowedAddress } from '../../firmware/measure/address';
import type { RejectReason } from '../../firmware/agent/protocol';
import { isHostName } from '../../firmware/names';
import { DEFAULT_REQUEST_LIMITS, parseCommand, parseResultAck, quote, validateRequestId, type ValidationContext } from '../../firmware/agent/validate';

const NOW = 1_800_000_000;
const context: ValidationContext = { limits: DEFAULT_REQUEST_LIMITS, allowPrivate: false, isAllowedAddress, now: NOW };

function parse(payload: string | Uint8Array, overrides: Partial<ValidationContext> = {}) {
  return parseCommand(typeof payload === 'string' ? Buffer.from(payload) : payload, { ...context, ...overrides });
}

function json(value: unknown): string {
  return JSON.stringify(value);
}

describe('parseCommand accepts', () => {
  test('the smallest one-off request', () => {
    const outcome = parse(json({ type: 'smtp', target: 'mx.example.org', af: 4, port: 25 }));
    assert.deepEqual(outcome, { ok: true, value: { kind: 'measure', request: { type: 'smtp', target: 'mx.example.org', af: 4, port: 25 } } });
  });

  test('a periodic request with every field', () => {
    const request = {
      type: 'smtp',
      target: 'example.org',
      af: 6,
      port: 587,
      mx: true,
      mode: 'starttls',
      sni: 'mail.example.org',
      helo: '[IPv6:2001:db8::7]',
      timeout: 20_000,
      transcript: true,
      msm_id: 1_000_001,
      interval: 300,
      spread: 60,
      start_time: NOW + 60,
      stop_time: NOW + 86_400,
    };
    assert.deepEqual(parse(json(request)), { ok: true, value: { kind: 'measure', request } });
  });

  test('a public IPv4 and IPv6 target', () => {
    assert.equal(parse(json({ type: 'smtp', target: '8.8.8.8' })).ok, true);
    assert.equal(parse(json({ type: 'smtp', target: '2a00:1450::1', af: 6 })).ok, true);
  });

  test('a private target when the probe allows it', () => {
    assert.equal(parse(json({ type: 'smtp', target: '127.0.0.1' }), { allowPrivate: true }).ok, true);
    assert.equal(parse(json({ type: 'smtp', target: 'localhost' }), { allowPrivate: true }).ok, true);
  });

  test('a stop request', () => {
    assert.deepEqual(parse(json({ type: 'stop', req_id: 'msm-7' })), { ok: true, value: { kind: 'stop', request: { type: 'stop', req_id: 'msm-7' } } });
  });
});

describe('parseCommand rejects', () => {
  const big = json({ type: 'smtp', target: 'example.org', helo: 'a'.repeat(5000) });
  const cases: Array<[string, string | Uint8Array, RejectReason]> = [
    ['malformed JSON', '{"type":"smtp",', 'malformed-json'],
    ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]), 'malformed-json'],
    ['a JSON array', '[1,2]', 'malformed-json'],
    ['JSON null', 'null', 'malformed-json'],
    ['an oversized payload', big, 'payload-too-large'],
    ['a missing type', json({ target: 'example.org' }), 'missing-field'],
    ['a numeric type', json({ type: 1, target: 'example.org' }), 'invalid-field'],
    ['an unknown type', json({ type: 'ping', target: 'example.org' }), 'unsupported-type'],
    ['an unknown field', json({ type: 'smtp', target: 'example.org', data: 'x' }), 'unknown-field'],
    ['a prototype key', '{"type":"smtp","target":"example.org","__proto__":{}}', 'unknown-field'],
    ['a missing target', json({ type: 'smtp', port: 25 }), 'missing-field'],
    ['a numeric target', json({ type: 'smtp', target: 42 }), 'invalid-field'],
    ['a target with a space', json({ type: 'smtp', target: 'mx example.org' }), 'invalid-field'],
    ['a numeric host name', json({ type: 'smtp', target: '127.1' }), 'invalid-field'],
    ['a hex host name', json({ type: 'smtp', target: '0x7f000001' }), 'invalid-field'],
    ['a string port', json({ type: 'smtp', target: 'example.org', port: '25' }), 'invalid-field'],
    ['port 0', json({ type: 'smtp', target: 'example.org', port: 0 }), 'invalid-field'],
    ['port 65536', json({ type: 'smtp', target: 'example.org', port: 65_536 }), 'invalid-field'],
    ['a fractional port', json({ type: 'smtp', target: 'example.org', port: 25.5 }), 'invalid-field'],
    ['af 5', json({ type: 'smtp', target: 'example.org', af: 5 }), 'invalid-field'],
    ['af not matching the address', json({ type: 'smtp', target: '8.8.8.8', af: 6 }), 'invalid-field'],
    ['mx with an address', json({ type: 'smtp', target: '8.8.8.8', mx: true }), 'invalid-field'],
    ['an unknown mode', json({ type: 'smtp', target: 'example.org', mode: 'ssl' }), 'invalid-field'],
    ['a string boolean', json({ type: 'smtp', target: 'example.org', transcript: 'yes' }), 'invalid-field'],
    ['a helo with a space', json({ type: 'smtp', target: 'example.org', helo: 'a b' }), 'invalid-field'],
    ['a timeout too short', json({ type: 'smtp', target: 'example.org', timeout: 10 }), 'invalid-field'],
    ['an interval too short', json({ type: 'smtp', target: 'example.org', interval: 59 }), 'invalid-field'],
    ['an interval too long', json({ type: 'smtp', target: 'example.org', interval: 8 * 86_400 }), 'invalid-field'],
    ['a negative interval', json({ type: 'smtp', target: 'example.org', interval: -60 }), 'invalid-field'],
    ['a spread beyond the interval', json({ type: 'smtp', target: 'example.org', interval: 60, spread: 61 }), 'invalid-field'],
    ['a one-off spread beyond its bound', json({ type: 'smtp', target: 'example.org', spread: 3601 }), 'invalid-field'],
    ['a start time too far ahead', json({ type: 'smtp', target: 'example.org', start_time: NOW + 8 * 86_400 }), 'invalid-field'],
    ['a stop time on a one-off', json({ type: 'smtp', target: 'example.org', stop_time: NOW + 600 }), 'invalid-field'],
    ['a stop time in the past', json({ type: 'smtp', target: 'example.org', interval: 60, stop_time: NOW - 1 }), 'invalid-field'],
    ['a stop time before the start', json({ type: 'smtp', target: 'example.org', interval: 60, start_time: NOW + 600, stop_time: NOW + 300 }), 'invalid-field'],
    ['a loopback target', json({ type: 'smtp', target: '127.0.0.1' }), 'target-not-allowed'],
    ['a private target', json({ type: 'smtp', target: '10.1.2.3' }), 'target-not-allowed'],
    ['a link-local IPv6 target', json({ type: 'smtp', target: 'fe80::1' }), 'target-not-allowed'],
    ['an IPv4-mapped loopback target', json({ type: 'smtp', target: '::ffff:127.0.0.1' }), 'target-not-allowed'],
    ['localhost', json({ type: 'smtp', target: 'localhost' }), 'target-not-allowed'],
    ['a .localhost name', json({ type: 'smtp', target: 'mx.localhost.' }), 'target-not-allowed'],
    ['a stop without req_id', json({ type: 'stop' }), 'missing-field'],
    ['a stop with a bad req_id', json({ type: 'stop', req_id: 'a/b' }), 'invalid-field'],
    ['a stop with extra fields', json({ type: 'stop', req_id: 'a', target: 'x' }), 'unknown-field'],
  ];
  for (const [name, payload, reason] of cases) {
    test(name, () => {
      const outcome = parse(payload);
      assert.equal(outcome.ok, false);
      if (outcome.ok) return;
      assert.equal(outcome.reason, reason);
      assert.ok(outcome.message.length > 0 && outcome.message.length <= 200, outcome.message);
    });
  }

  test('messages show at most a bounded, printable piece of the input', () => {
    const outcome = parse(json({ type: 'smtp', target: 'example.org', ['\u0000x'.repeat(300)]: 1 }));
    assert.equal(outcome.ok, false);
    if (outcome.ok) return;
    assert.match(outcome.message, /^unknown field "[\x20-\x7e]{64}\.\.\."$/);
  });
});

describe('request ids', () => {
  test('accepts the safe alphabet up to 64 characters', () => {
    assert.equal(validateRequestId('a').ok, true);
    assert.equal(validateRequestId(`A-z_0.9${'x'.repeat(57)}`).ok, true);
  });

  for (const reqId of ['', 'x'.repeat(65), 'a b', 'ü', 'a+b', 'a#b']) {
    test(`rejects ${quote(reqId)}`, () => {
      const outcome = validateRequestId(reqId);
      assert.equal(outcome.ok, false);
      if (!outcome.ok) assert.equal(outcome.reason, 'invalid-request-id');
    });
  }
});

describe('host names', () => {
  test('follow RFC 1123 and are not addresses in disguise', () => {
    for (const name of ['mx.example.org', 'mx.example.org.', 'a', 'x-1.example', '1password.com']) assert.equal(isHostName(name), true, name);
    for (const name of ['', '-a.example', 'a-.example', 'a..b', 'a_b.example', `${'a'.repeat(64)}.example`, '1.2.3.4', '0x7f.1']) assert.equal(isHostName(name), false, name);
  });
});

describe('parseResultAck', () => {
  test('returns the ids', () => {
    assert.deepEqual(parseResultAck(Buffer.from(json({ result_ids: ['a', 'b'] })), 10), { ok: true, value: ['a', 'b'] });
  });

  test('rejects too many ids, wrong types and unknown fields', () => {
    for (const payload of [json({ result_ids: ['a', 'b', 'c'] }), json({ result_ids: [1] }), json({ result_ids: 'a' }), json({ result_ids: [], x: 1 }), '{']) {
      assert.equal(parseResultAck(Buffer.from(payload), 2).ok, false, payload);
    }
  });
});
