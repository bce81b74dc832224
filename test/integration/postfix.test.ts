// The driver against a real Postfix on loopback (test/helpers/postfix.ts): what a mail operator
// would see measuring a correctly configured STARTTLS server, one without TLS, one with
// implicit TLS, one that rejects our address with a blocklist text, and a certificate we do
// not trust. Skipped, loudly, only where Postfix is not installed; never in CI.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { measure } from '../../firmware/measure/driver';
import type { MeasureOptions } from '../../firmware/measure/options';
import type { Finding, SmtpResult } from '../../firmware/result';
import { testCerts } from '../helpers/certs';
import { BLOCKLIST_REJECT_TEXT, POSTFIX_HOSTNAME, type PostfixInstance, type PostfixPorts, startPostfix } from '../helpers/postfix';

/** Generous: a shared, loaded machine; a healthy local handshake takes milliseconds. */
const TIMEOUT_MS = 15_000;
const TLS_FINDINGS: Finding[] = [
  'tls-handshake-failed',
  'certificate-expired',
  'certificate-host-mismatch',
  'certificate-not-trusted',
  'validation-failure',
  'starttls-not-supported',
  'starttls-refused',
  'starttls-capability-mangled',
  'starttls-reoffered-after-tls',
];

let postfix: PostfixInstance | null = null;

before(async () => {
  postfix = await startPostfix();
});

after(async () => {
  await postfix?.stop();
});

function measurePostfix(service: keyof PostfixPorts, options: Partial<MeasureOptions> = {}): Promise<SmtpResult> {
  const instance = postfix as PostfixInstance;
  return measure({
    target: instance.host,
    port: instance.ports[service],
    allowPrivate: true,
    ca: [testCerts().ca.cert],
    sni: POSTFIX_HOSTNAME,
    timeoutMs: TIMEOUT_MS,
    transcript: true,
    ...options,
  });
}

/** The whole result and Postfix's log, so a failure says what happened on both sides. */
function explain(result: SmtpResult): string {
  return `${JSON.stringify(result, null, 2)}\n--- postfix log ---\n${postfix?.logTail() ?? ''}`;
}

function capabilityNames(reply: SmtpResult['ehlo']): string[] {
  return Object.keys(reply?.capabilities ?? {}).map((name) => name.toUpperCase());
}

describe('real Postfix on loopback', () => {
  it('STARTTLS service: the full handshake, a trusted certificate, and no TLS findings', async (t) => {
    if (!postfix) return t.skip('postfix not available');
    const result = await measurePostfix('starttls');
    const why = explain(result);
    assert.equal(result.status, 'ok', why);
    assert.equal(result.phase, 'quit', why);
    assert.equal(result.dst_addr, '127.0.0.1', why);
    assert.equal(result.dst_port, String(postfix.ports.starttls), why);
    assert.equal(result.banner?.code, 220, why);
    assert.match(result.banner?.lines[0] ?? '', /^mx\.test ESMTP/, why);
    assert.equal(result.ehlo?.code, 250, why);
    assert.ok(capabilityNames(result.ehlo).includes('STARTTLS'), why);
    assert.equal(result.starttls?.code, 220, why);
    assert.ok(result.tls, why);
    assert.ok(result.tls.ver === '1.2' || result.tls.ver === '1.3', why);
    assert.match(result.tls.server_cipher ?? '', /^0x[0-9A-F]{4}$/i, why);
    assert.equal(result.tls.authorized, true, why);
    assert.equal(result.tls.hostname, POSTFIX_HOSTNAME, why);
    assert.ok(result.tls.cert && result.tls.cert.length > 0, why);
    for (const pem of result.tls.cert) assert.match(pem, /^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n?$/, why);
    assert.equal(result.ehlo_tls?.code, 250, why);
    assert.ok(!capabilityNames(result.ehlo_tls).includes('STARTTLS'), why);
    assert.ok(capabilityNames(result.ehlo_tls).includes('PIPELINING'), why);
    assert.equal(result.quit?.code, 221, why);
    for (const finding of TLS_FINDINGS) assert.ok(!result.findings.includes(finding), `${finding}\n${why}`);
    assert.ok(result.ttc !== undefined && result.ttc >= 0 && result.rt >= result.ttc, why);
    // The probe never sends mail: no MAIL, RCPT or DATA on the wire.
    const sent = (result.transcript ?? []).filter(([, direction]) => direction === 'c').map(([, , line]) => line.toUpperCase());
    assert.ok(sent.length > 0, why);
    assert.ok(!sent.some((line) => /^(MAIL|RCPT|DATA)\b/.test(line)), why);
  });

  it('service without TLS: starttls-not-supported', async (t) => {
    if (!postfix) return t.skip('postfix not available');
    const result = await measurePostfix('plain');
    const why = explain(result);
    assert.equal(result.banner?.code, 220, why);
    assert.equal(result.ehlo?.code, 250, why);
    assert.ok(!capabilityNames(result.ehlo).includes('STARTTLS'), why);
    assert.ok(result.findings.includes('starttls-not-supported'), why);
    assert.equal(result.starttls, undefined, why);
    assert.equal(result.tls, undefined, why);
  });

  it('implicit TLS service: TLS from the first byte, then a normal session', async (t) => {
    if (!postfix) return t.skip('postfix not available');
    const result = await measurePostfix('implicitTls', { mode: 'implicit-tls' });
    const why = explain(result);
    assert.equal(result.status, 'ok', why);
    assert.equal(result.mode, 'implicit-tls', why);
    assert.ok(result.tls, why);
    assert.ok(result.tls.ver === '1.2' || result.tls.ver === '1.3', why);
    assert.equal(result.tls.authorized, true, why);
    assert.equal(result.banner?.code, 220, why);
    assert.equal(result.quit?.code, 221, why);
    assert.ok(!result.findings.includes('starttls-not-supported'), why);
    assert.ok(!result.findings.includes('tls-handshake-failed'), why);
  });

  it('client rejected at connect with a blocklist text: rejected, client-rejected, client-blocklisted', async (t) => {
    if (!postfix) return t.skip('postfix not available');
    const result = await measurePostfix('rejectAtConnect');
    const why = explain(result);
    assert.equal(result.status, 'rejected', why);
    assert.equal(result.banner?.code, 554, why);
    assert.equal(result.banner?.enhanced, '5.7.1', why);
    assert.ok(result.banner?.lines.some((line) => line.includes(BLOCKLIST_REJECT_TEXT)), why);
    assert.ok(result.findings.includes('client-rejected'), why);
    assert.ok(result.findings.includes('client-blocklisted'), why);
    assert.ok(!result.findings.includes('starttls-not-supported'), why);
    // RFC 5321 3.1: a client that gets a 554 greeting sends QUIT.
    assert.equal(result.quit?.code, 221, why);
  });

  it('certificate from a CA we were not given: certificate-not-trusted, still measured', async (t) => {
    if (!postfix) return t.skip('postfix not available');
    const result = await measurePostfix('starttls', { ca: undefined });
    const why = explain(result);
    assert.equal(result.status, 'ok', why);
    assert.equal(result.tls?.authorized, false, why);
    assert.ok(result.tls?.authorization_error, why);
    assert.ok(result.findings.includes('certificate-not-trusted'), why);
    assert.ok(!result.findings.includes('certificate-host-mismatch'), why);
    assert.ok(!result.findings.includes('certificate-expired'), why);
    assert.equal(result.ehlo_tls?.code, 250, why);
  });
});
