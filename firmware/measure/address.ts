// Which destination addresses a probe may measure by default. A probe sits in someone's
// network: it must not be usable to scan the host's LAN, loopback or link-local services, so
// only globally reachable unicast addresses are allowed unless the operator says otherwise.
// Ranges: RFC 6890 special-purpose registries (IPv4 and IPv6), RFC 1918 private, RFC 6598
// shared (CGN), RFC 3927 / RFC 4291 link-local, RFC 4193 unique local, multicast, and the
// documentation ranges (RFC 5737, RFC 3849).

import { BlockList, isIP } from 'node:net';

// Two lists: a BlockList also matches IPv4 addresses against its IPv6 rules in mapped form,
// which would make ::ffff:0:0/96 refuse every IPv4 address.
const notAllowedV4 = new BlockList();
const notAllowedV6 = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  notAllowedV4.addSubnet(net, prefix, 'ipv4');
}
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  // IPv4-mapped in hex form; the dotted form is checked as IPv4 below
  ['::ffff:0:0', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  notAllowedV6.addSubnet(net, prefix, 'ipv6');
}

/** The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), if it is one. */
function mappedIPv4(address: string): string | undefined {
  const match = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return match?.[1];
}

/** True when `address` is a public unicast address a probe may measure by default. */
export function isAllowedAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  const v4 = family === 6 ? mappedIPv4(address) : address;
  if (v4 !== undefined) return !notAllowedV4.check(v4, 'ipv4');
  return !notAllowedV6.check(address, 'ipv6');
}
