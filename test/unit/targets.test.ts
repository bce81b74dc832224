// Target specifications as people write them on the command line and in target files.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseTarget } from '../../firmware/targets';

test('host, host:port, IPv4 with port, bracketed IPv6 with port, bare IPv6', () => {
  assert.deepEqual(parseTarget('mx.example.org'), { host: 'mx.example.org' });
  assert.deepEqual(parseTarget('mx.example.org:587'), { host: 'mx.example.org', port: 587 });
  assert.deepEqual(parseTarget('192.0.2.7:2525'), { host: '192.0.2.7', port: 2525 });
  assert.deepEqual(parseTarget('[2001:db8::25]:25'), { host: '2001:db8::25', port: 25 });
  assert.deepEqual(parseTarget('[2001:db8::25]'), { host: '2001:db8::25' });
  assert.deepEqual(parseTarget('2001:db8::25'), { host: '2001:db8::25' });
  assert.deepEqual(parseTarget('  mx.example.org  '), { host: 'mx.example.org' });
});

test('bad ports and hosts get stable error codes', () => {
  assert.deepEqual(parseTarget('mx.example.org:0'), { error: 'bad-port' });
  assert.deepEqual(parseTarget('mx.example.org:65536'), { error: 'bad-port' });
  assert.deepEqual(parseTarget('mx.example.org:smtp'), { error: 'bad-port' });
  assert.deepEqual(parseTarget('[mx.example.org]:25'), { error: 'bad-host' });
  assert.deepEqual(parseTarget('bad host'), { error: 'bad-host' });
  assert.deepEqual(parseTarget(':25'), { error: 'bad-host' });
  assert.deepEqual(parseTarget('a'.repeat(254)), { error: 'bad-host' });
  assert.deepEqual(parseTarget('-leading.example'), { error: 'bad-host' });
});
