// Which targets a probe refuses by default: nothing on the host's own networks.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isAllowedAddress } from '../../firmware/measure/address';

test('public unicast addresses are allowed', () => {
  for (const address of ['8.8.8.8', '193.0.6.139', '2001:67c:2e8:22::c100:68b', '2a00:1450:4001::1', '::ffff:8.8.8.8']) {
    assert.equal(isAllowedAddress(address), true, address);
  }
});

test('loopback, private, shared, link-local, multicast, documentation and unspecified addresses are refused', () => {
  for (const address of [
    '127.0.0.1', '127.255.0.9', '10.0.0.1', '172.16.5.4', '172.31.255.255', '192.168.1.1', '100.64.0.1', '169.254.1.1',
    '224.0.0.251', '239.255.255.250', '255.255.255.255', '0.0.0.0', '192.0.2.1', '198.51.100.1', '203.0.113.9', '198.18.0.1',
    '::1', '::', 'fe80::1', 'fc00::1', 'fd12:3456::1', 'ff02::1', '2001:db8::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1',
  ]) {
    assert.equal(isAllowedAddress(address), false, address);
  }
});

test('172.15.x and 172.32.x are outside RFC 1918 and allowed', () => {
  assert.equal(isAllowedAddress('172.15.255.255'), true);
  assert.equal(isAllowedAddress('172.32.0.1'), true);
});

test('anything that is not an IP address is refused', () => {
  for (const text of ['', 'mx.example.org', '1.2.3', '1.2.3.4.5', '::g']) assert.equal(isAllowedAddress(text), false, text);
});
