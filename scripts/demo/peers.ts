// Mail servers for demos, on loopback only: a STARTTLS-capable SMTP server (nodemailer's
// smtp-server with the demo certificate in ./certs), and a man-in-the-middle TCP proxy that
// strips or mangles the STARTTLS capability on its way to the client, as a downgrading
// middlebox does. Nothing here needs Postfix, openssl or any setup.

import { readFileSync } from 'node:fs';
import { type AddressInfo, type Server, type Socket, createServer, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';

const certDir = join(__dirname, 'certs');

/** The demo CA's file: pass it as a trust anchor (`--ca`) so the demo server's certificate validates. */
export const demoCaFile = join(certDir, 'ca.crt');

/** The demo CA (PEM), read when first asked for. */
export function demoCa(): string {
  return readFileSync(demoCaFile, 'utf8');
}

export interface Listening {
  host: string;
  port: number;
  close(): Promise<void>;
}

function listen(server: Server | SMTPServer, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      const inner = server instanceof SMTPServer ? (server as unknown as { server: Server }).server : server;
      resolve((inner.address() as AddressInfo).port);
    });
  });
}

/** A STARTTLS mail server for mx.demo.test that never accepts mail (no DATA is ever sent). */
export async function startStarttlsPeer(host = '127.0.0.1'): Promise<Listening> {
  const server = new SMTPServer({
    name: 'mx.demo.test',
    banner: 'smtp-probe demo server',
    key: readFileSync(join(certDir, 'mx.key')),
    cert: readFileSync(join(certDir, 'mx.crt')),
    authOptional: true,
    disabledCommands: ['AUTH'],
    logger: false,
    // The demo stays on loopback: no reverse lookup of the client through the system resolver.
    disableReverseLookup: true,
    onMailFrom: (_address, _session, callback) => callback(new Error('demo server accepts no mail')),
  });
  server.on('error', () => undefined);
  const port = await listen(server, host);
  return { host, port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

export type Tampering = 'strip' | 'mangle';

const STARTTLS_LINE = /^(\d{3})([- ])STARTTLS[ \t]*$/i;

/**
 * Rewrites the server's side of an SMTP conversation line by line: `strip` removes the
 * STARTTLS line of the EHLO reply (moving the final-line marker to the new last line),
 * `mangle` turns it into XXXXXXXA as Cisco "ESMTP inspection" does.
 */
export class StarttlsTamperer {
  private partial = '';
  private held: string | undefined;

  constructor(private readonly tampering: Tampering) {}

  push(chunk: Buffer): Buffer {
    const text = this.partial + chunk.toString('latin1');
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    let out = '';
    for (const raw of lines) out += this.line(raw.endsWith('\r') ? raw.slice(0, -1) : raw);
    return Buffer.from(out, 'latin1');
  }

  private line(line: string): string {
    const match = STARTTLS_LINE.exec(line);
    if (this.tampering === 'mangle') return match ? `${match[1]}${match[2]}XXXXXXXA\r\n` : line + '\r\n';
    // Hold each continuation line back one step, so that when the final line is the one
    // removed, the line before it can become the final line.
    const previous = this.held;
    this.held = undefined;
    if (match) {
      if (match[2] === ' ') return previous === undefined ? '' : previous.replace(/^(\d{3})-/, '$1 ') + '\r\n';
      return previous === undefined ? '' : previous + '\r\n';
    }
    if (/^\d{3}-/.test(line)) {
      this.held = line;
      return previous === undefined ? '' : previous + '\r\n';
    }
    return (previous === undefined ? '' : previous + '\r\n') + line + '\r\n';
  }
}

/** A TCP proxy on loopback in front of `upstream` that tampers with STARTTLS until TLS would start. */
export async function startStrippingProxy(upstream: { host: string; port: number }, tampering: Tampering = 'strip', host = '127.0.0.1'): Promise<Listening> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const server = netConnect(upstream.port, upstream.host);
    sockets.add(client).add(server);
    const tamperer = new StarttlsTamperer(tampering);
    server.on('data', (chunk: Buffer) => client.write(tamperer.push(chunk)));
    client.on('data', (chunk: Buffer) => server.write(chunk));
    const closeBoth = (): void => {
      client.destroy();
      server.destroy();
      sockets.delete(client);
      sockets.delete(server);
    };
    for (const socket of [client, server]) {
      socket.on('error', closeBoth);
      socket.on('close', closeBoth);
    }
  });
  const port = await listen(server, host);
  return {
    host,
    port,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
