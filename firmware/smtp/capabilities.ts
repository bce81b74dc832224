// EHLO capabilities (RFC 5321 4.1.1.1): after the greeting line, each line of the reply is
// one ehlo-line = ehlo-keyword *( SP ehlo-param ), ehlo-keyword = (ALPHA / DIGIT)
// *(ALPHA / DIGIT / "-"). Keywords are case-insensitive, so they are stored upper-cased and
// matched whole: a line is never searched for a substring ("XSTARTTLSX" is not STARTTLS).

import type { Capabilities } from '../result';
import type { ReplyLine } from './reply';

const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;

export interface ParsedCapabilities {
  capabilities: Capabilities;
  /** lines that are not a valid ehlo-line, kept as they came */
  invalid: string[];
}

export function parseCapabilities(lines: readonly ReplyLine[]): ParsedCapabilities {
  const capabilities: Capabilities = Object.create(null) as Capabilities;
  const invalid: string[] = [];
  for (const line of lines.slice(1)) {
    const [keyword = '', ...params] = line.text.split(' ');
    if (!KEYWORD.test(keyword)) {
      invalid.push(line.text);
      continue;
    }
    const name = keyword.toUpperCase();
    // A repeated keyword keeps its first parameters; the repetition is still in the lines.
    if (!(name in capabilities)) capabilities[name] = params.filter((p) => p.length > 0);
  }
  return { capabilities: { ...capabilities }, invalid };
}

export function hasCapability(capabilities: Capabilities, keyword: string): boolean {
  return Object.prototype.hasOwnProperty.call(capabilities, keyword.toUpperCase());
}

// A Cisco PIX/ASA "ESMTP inspection" rewrites commands it does not allow into X's of the
// same length, so STARTTLS (8 letters) arrives as "XXXXXXXA" (or all X's): the capability
// was there and something on the path hid it.
const MANGLED_STARTTLS = /^X{7}[XA]$/;

export function hasMangledStarttls(capabilities: Capabilities): boolean {
  return Object.keys(capabilities).some((k) => MANGLED_STARTTLS.test(k));
}
