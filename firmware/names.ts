// Names as they may appear in a request, on the command line and on the wire. Anything that
// goes into an SMTP command line (the EHLO argument) must be one of these, so no CR, LF or
// other byte can smuggle a second command (RFC 5321 4.1.1.1, 4.1.3).

import { isIP } from 'node:net';

// RFC 1123 2.1 host names: LDH labels of 1..63, 253 characters in all, an optional final dot.
const HOST_NAME = /^(?=.{1,253}\.?$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$/;

// What inet_aton(3) would read as an IPv4 address ("127.1", "0x7f000001"): getaddrinfo turns
// such "names" into addresses without DNS, so they are addresses in disguise (RFC 3696 2: a
// top-level label is never all-numeric).
const NUMERIC_HOST = /^(?:0x[0-9a-f]*|\d+)(?:\.(?:0x[0-9a-f]*|\d+)){0,3}\.?$/i;

export function isHostName(text: string): boolean {
  return HOST_NAME.test(text) && !NUMERIC_HOST.test(text);
}

/** RFC 5321 4.1.3 address literal: [192.0.2.1] or [IPv6:2001:db8::1]. */
export function isAddressLiteral(text: string): boolean {
  const match = /^\[(IPv6:)?([0-9A-Fa-f:.]{2,45})\]$/.exec(text);
  if (!match) return false;
  return isIP(match[2] as string) === (match[1] ? 6 : 4);
}

/** What may follow EHLO/HELO: a domain or an address literal (RFC 5321 4.1.1.1). */
export function isHeloArgument(text: string): boolean {
  return isHostName(text) || isAddressLiteral(text);
}
