// Names, MX sets and DNS failures, resolved by a real dnsmasq on loopback (never the system
// resolver): the target a person gives is resolved the way a mail client would (RFC 5321 5.1).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { measure } from '../../firmware/measure/driver';
import { type Listening, demoCa, startStarttlsPeer } from '../../scripts/demo/peers';
import { type Dnsmasq, skipWithoutDnsmasq, startDnsmasq } from '../helpers/dnsmasq';

const skip = skipWithoutDnsmasq();

describe('DNS resolution against dnsmasq', { skip }, () => {
  let dns: Dnsmasq;
  let peer4: Listening;
  let peer6: Listening;

  before(async () => {
    peer4 = await startStarttlsPeer('127.0.0.1');
    peer6 = await startStarttlsPeer('::1');
    dns = await startDnsmasq({
      hosts: {
        'mx.demo.test': ['127.0.0.1', '::1'],
        'backup.demo.test': ['127.0.0.2'],
        'nomx.demo.test': ['127.0.0.1'],
        'v4only.demo.test': ['127.0.0.1'],
      },
      mx: {
        'mail.demo.test': [
          [20, 'backup.demo.test'],
          [10, 'mx.demo.test'],
        ],
      },
    });
  });

  after(async () => {
    await dns?.stop();
    await peer4?.close();
    await peer6?.close();
  });

  const base = { allowPrivate: true, ca: [demoCa()], timeoutMs: 10_000 };

  test('a host name is resolved (A), timed (ttr) and used as SNI and certificate name', async () => {
    const result = await measure({ ...base, target: 'mx.demo.test', port: peer4.port, resolver: dns.server });
    assert.equal(result.status, 'ok');
    assert.equal(result.dst_name, 'mx.demo.test');
    assert.equal(result.dst_addr, '127.0.0.1');
    assert.equal(result.af, 4);
    assert.equal(typeof result.ttr, 'number');
    assert.equal(result.tls?.sni, 'mx.demo.test');
    assert.equal(result.tls?.authorized, true);
    assert.deepEqual(result.findings, []);
  });

  test('--af 6 resolves AAAA and connects over IPv6', async () => {
    const result = await measure({ ...base, target: 'mx.demo.test', af: 6, port: peer6.port, resolver: dns.server });
    assert.equal(result.status, 'ok');
    assert.equal(result.dst_addr, '::1');
    assert.equal(result.af, 6);
  });

  test('--mx measures the best MX and records the whole set, best first', async () => {
    const result = await measure({ ...base, target: 'mail.demo.test', mx: true, port: peer4.port, resolver: dns.server });
    assert.equal(result.status, 'ok');
    assert.deepEqual(result.mx, [
      { preference: 10, exchange: 'mx.demo.test' },
      { preference: 20, exchange: 'backup.demo.test' },
    ]);
    assert.equal(result.dst_name, 'mail.demo.test');
    assert.equal(result.dst_addr, '127.0.0.1');
    assert.equal(result.tls?.hostname, 'mx.demo.test');
  });

  test('a domain without MX is its own implicit MX (RFC 5321 5.1)', async () => {
    const result = await measure({ ...base, target: 'nomx.demo.test', mx: true, port: peer4.port, resolver: dns.server });
    assert.equal(result.status, 'ok');
    assert.equal(result.dst_addr, '127.0.0.1');
    assert.equal(result.mx, undefined);
  });

  test('a name that does not exist is a dns-error with the resolver code', async () => {
    const result = await measure({ ...base, target: 'missing.demo.test', port: peer4.port, resolver: dns.server });
    assert.equal(result.status, 'dns-error');
    assert.equal(result.phase, 'resolve');
    assert.equal(result.dnserr, 'ENOTFOUND');
    assert.equal(result.banner, undefined);
  });

  test('a name with no AAAA record asked with --af 6 is a dns-error, not a connection to IPv4', async () => {
    const result = await measure({ ...base, target: 'v4only.demo.test', af: 6, port: peer6.port, resolver: dns.server });
    assert.equal(result.status, 'dns-error');
    assert.equal(result.dst_addr, undefined);
  });

  test('a name resolving to loopback is refused without --allow-private', async () => {
    const result = await measure({ target: 'mx.demo.test', port: peer4.port, resolver: dns.server, timeoutMs: 5000 });
    assert.equal(result.status, 'address-not-allowed');
    assert.equal(result.dst_addr, '127.0.0.1');
    assert.equal(result.banner, undefined);
  });
});
