// Server text goes into JSON results and onto terminals. SMTP replies are 7-bit ASCII
// (RFC 5321 2.4), but servers and middleboxes send anything, so every byte outside printable
// ASCII is shown as \xNN and the backslash itself as \\: the record stays faithful and
// unambiguous, and no NUL, escape sequence or invalid UTF-8 reaches a result or a screen.

const HEX = '0123456789abcdef';

function isPlain(b: number): boolean {
  return b >= 0x20 && b < 0x7f && b !== 0x5c;
}

export function printable(bytes: Uint8Array, start = 0, end = bytes.length): string {
  // Nearly every line is plain ASCII: one decode then, instead of a string built per byte
  // (which leaves garbage that, across hundreds of measurements, costs tens of MiB of heap).
  let firstEscape = start;
  while (firstEscape < end && isPlain(bytes[firstEscape] as number)) firstEscape++;
  let out = Buffer.from(bytes.buffer, bytes.byteOffset + start, firstEscape - start).toString('latin1');
  for (let i = firstEscape; i < end; i++) {
    const b = bytes[i] as number;
    if (b === 0x5c) out += '\\\\';
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += '\\x' + HEX[b >> 4] + HEX[b & 15];
  }
  return out;
}

/** Same rule for text we already hold as a string (names given by a user or by DNS). */
export function printableString(text: string): string {
  return printable(Buffer.from(text, 'utf8'));
}
