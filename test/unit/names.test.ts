// Names that may reach the wire: only host names and address literals, never a second command.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isAddressLiteral, isHeloArgument, isHostName } from '../../firmware/names';

test('host names follow RFC 1123 and are not numbers in disguise', () => {
  for (const name of ['mx.example.org', 'MX1.Example.ORG.', 'a', 'xn--bcher-kva.example', `${'a'.repeat(63)}.example`]) assert.ok(isHostName(name), name);
  for (const name of ['', '-mx.example', 'mx-.example', 'mx..example', 'mx example', 'mx_1.example', '127.1', '0x7f000001', `${'a'.repeat(64)}.example`, 'a.'.repeat(127) + 'ab']) {
    assert.equal(isHostName(name), false, name);
  }
});

test('address literals need a real address of the right family', () => {
  assert.ok(isAddressLiteral('[192.0.2.7]'));
  assert.ok(isAddressLiteral('[IPv6:2001:db8::7]'));
  assert.equal(isAddressLiteral('[2001:db8::7]'), false);
  assert.equal(isAddressLiteral('[IPv6:192.0.2.7]'), false);
  assert.equal(isAddressLiteral('[999.0.2.7]'), false);
  assert.equal(isAddressLiteral('192.0.2.7'), false);
});

test('a HELO argument can never carry a line break or a second command', () => {
  assert.ok(isHeloArgument('probe.example.net'));
  assert.ok(isHeloArgument('[192.0.2.7]'));
  for (const text of ['x\r\nMAIL FROM:<>', 'x\nDATA', 'x y', '', '[192.0.2.7]\r\n']) assert.equal(isHeloArgument(text), false, JSON.stringify(text));
});
