// Findings from finished results: each rule as a table row, from the result a user would get.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { judge } from '../../firmware/judge/findings';
import { type EhloReply, type Reply, type SmtpResult, compactResult, newResult } from '../../firmware/result';

function reply(code: number, lines: string[], enhanced?: string): Reply {
  return { code, lines, rt: 1, ...(enhanced ? { enhanced } : {}) };
}

function ehlo(capabilities: string[]): EhloReply {
  return { ...reply(250, ['mx.test', ...capabilities]), capabilities: Object.fromEntries(capabilities.map((c) => [c.toUpperCase(), []])) };
}

function result(fields: Partial<SmtpResult>): SmtpResult {
  return compactResult({ ...newResult({ dst_name: 'mx.test', dst_port: 25, af: 4, mode: 'starttls', timestamp: 0 }), phase: 'quit', ...fields });
}

test('a clean STARTTLS handshake has no findings', () => {
  const r = result({ banner: reply(220, ['mx.test ESMTP']), ehlo: ehlo(['PIPELINING', 'STARTTLS']), starttls: reply(220, ['go ahead']), ehlo_tls: ehlo(['PIPELINING']), quit: reply(221, ['bye']) });
  assert.deepEqual(judge(r, { bareLf: false, validation: { expired: false, untrusted: false } }), []);
});

test('STARTTLS missing from EHLO is starttls-not-supported; mangled into XXXXXXXA also says so', () => {
  assert.deepEqual(judge(result({ ehlo: ehlo(['PIPELINING']) }), { bareLf: false }), ['starttls-not-supported']);
  assert.deepEqual(judge(result({ ehlo: ehlo(['PIPELINING', 'XXXXXXXA']) }), { bareLf: false }), ['starttls-not-supported', 'starttls-capability-mangled']);
});

test('with --no-starttls a server without STARTTLS is not a finding', () => {
  assert.deepEqual(judge(result({ mode: 'plain', ehlo: ehlo(['PIPELINING']) }), { bareLf: false }), []);
});

test('a HELO-only server cannot offer STARTTLS', () => {
  const r = result({ ehlo: { ...reply(502, ['command not implemented']), capabilities: {} }, helo: reply(250, ['mx.test']) });
  assert.deepEqual(judge(r, { bareLf: false }), ['starttls-not-supported']);
});

test('STARTTLS refused after it was offered', () => {
  const r = result({ ehlo: ehlo(['STARTTLS']), starttls: reply(454, ['4.7.0 TLS not available'], '4.7.0') });
  assert.deepEqual(judge(r, { bareLf: false }), ['starttls-refused']);
});

test('certificate facts map to RFC 8460 words', () => {
  const ok = result({ ehlo: ehlo(['STARTTLS']), starttls: reply(220, ['go']) });
  assert.deepEqual(judge(ok, { bareLf: false, validation: { expired: true, untrusted: false, chainError: 'CERT_HAS_EXPIRED' } }), ['certificate-expired']);
  assert.deepEqual(judge(ok, { bareLf: false, validation: { expired: false, untrusted: false, nameError: 'ERR_TLS_CERT_ALTNAME_INVALID' } }), ['certificate-host-mismatch']);
  assert.deepEqual(judge(ok, { bareLf: false, validation: { expired: false, untrusted: true, chainError: 'DEPTH_ZERO_SELF_SIGNED_CERT' } }), ['certificate-not-trusted']);
  assert.deepEqual(judge(ok, { bareLf: false, validation: { expired: false, untrusted: false, chainError: 'CERT_REVOKED' } }), ['validation-failure']);
});

test('a failed handshake, STARTTLS offered again inside TLS, and plaintext after 220', () => {
  assert.deepEqual(judge(result({ status: 'tls-failed', phase: 'tls', ehlo: ehlo(['STARTTLS']), starttls: reply(220, ['go']) }), { bareLf: false }), ['tls-handshake-failed']);
  assert.deepEqual(judge(result({ ehlo: ehlo(['STARTTLS']), starttls: reply(220, ['go']), ehlo_tls: ehlo(['STARTTLS']) }), { bareLf: false }), ['starttls-reoffered-after-tls']);
  assert.deepEqual(judge(result({ ehlo: ehlo(['STARTTLS']), starttls: reply(220, ['go']), plaintext_after_starttls: '250 injected' }), { bareLf: false }), ['plaintext-after-starttls']);
});

test('a 554 greeting naming a blocklist is client-rejected and client-blocklisted, not starttls-not-supported', () => {
  const r = result({ status: 'rejected', phase: 'banner', banner: reply(554, ['5.7.1 Service unavailable; client [198.51.100.7] blocked using zen.spamhaus.org'], '5.7.1') });
  assert.deepEqual(judge(r, { bareLf: false }).sort(), ['client-blocklisted', 'client-rejected']);
});

test('a busy server (421 without a policy code) and an unknown EHLO (502) are not rejections of the client', () => {
  assert.deepEqual(judge(result({ status: 'rejected', phase: 'banner', banner: reply(421, ['mx.test too busy, try later']) }), { bareLf: false }), []);
  assert.deepEqual(judge(result({ status: 'rejected', phase: 'helo', ehlo: { ...reply(502, ['no']), capabilities: {} }, helo: reply(451, ['later']) }), { bareLf: false }), []);
});

test('a 4xx with a policy enhanced code (x.7.x) is client-rejected', () => {
  const r = result({ status: 'rejected', phase: 'ehlo', banner: reply(220, ['hi']), ehlo: { ...reply(450, ['4.7.1 Client host rejected: cannot find your hostname'], '4.7.1'), capabilities: {} } });
  assert.ok(judge(r, { bareLf: false }).includes('client-rejected'));
});

test('limits and bare LF are reported', () => {
  assert.deepEqual(judge(result({ status: 'limit-exceeded', phase: 'ehlo' }), { bareLf: true }), ['reply-limit-exceeded', 'bare-lf']);
});
