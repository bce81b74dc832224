// Scripted SMTP peers for tests: real TCP servers on 127.0.0.1 that play a fixed script on
// every connection (send bytes, slowly or split, wait for a client line, upgrade to TLS,
// flood, end) and record everything the client said, so a test can check both what the probe
// concluded and what it sent (never MAIL, RCPT or DATA; QUIT after a 554 greeting).
//
// A script that runs out of steps leaves the connection open and silent, which is also how a
// peer that "accepts and never speaks" is written: an empty script.

import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import { TLSSocket, type TLSSocketOptions } from 'node:tls';

export interface Pace {
  /** bytes per write */
  chunkSize: number;
  /** pause between writes, ms (at least one turn of the event loop, so writes stay separate) */
  pauseMs: number;
}

export type Step =
  | { do: 'send'; data: Buffer; pace?: Pace }
  | { do: 'expect'; pattern: RegExp }
  | { do: 'await-bytes' }
  | { do: 'starttls'; reply: Buffer; tls: ServerTlsOptions }
  | { do: 'flood'; chunk: Buffer; totalBytes: number }
  | { do: 'pause'; ms: number }
  | { do: 'end' }
  | { do: 'reset' };

function bytes(data: string | Buffer): Buffer {
  return typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
}

/** Sends bytes (a string is taken as latin1, so "\xff" is one byte 0xff), at the peer's pace. */
export function send(data: string | Buffer): Step {
  return { do: 'send', data: bytes(data) };
}

/** Sends bytes `chunkSize` at a time with `pauseMs` between writes (a tarpit, or a split reply). */
export function sendPaced(data: string | Buffer, pace: Pace): Step {
  return { do: 'send', data: bytes(data), pace };
}

/** Waits for a client line matching `pattern`; lines that do not match are recorded and skipped. */
export function expect(pattern: RegExp): Step {
  return { do: 'expect', pattern };
}

/** Waits for any bytes from the client after the last expected line (e.g. a TLS ClientHello). */
export function awaitBytes(): Step {
  return { do: 'await-bytes' };
}

/** The server's key and certificate, and any other TLS option (ciphers, versions). */
export type ServerTlsOptions = Omit<TLSSocketOptions, 'isServer'> & { key: string; cert: string };

/**
 * Sends `reply` (normally the 220 to STARTTLS) and becomes a TLS server on the same socket.
 * Reading stops before the reply goes out, so the client's first TLS bytes reach TLS.
 */
export function startTls(reply: string | Buffer, tls: ServerTlsOptions): Step {
  return { do: 'starttls', reply: bytes(reply), tls };
}

/** Writes `chunk` over and over, up to `totalBytes`, as fast as the client reads. */
export function flood(chunk: string | Buffer, totalBytes: number): Step {
  return { do: 'flood', chunk: bytes(chunk), totalBytes };
}

/** Ends the stream: FIN (after close_notify when TLS is up). */
export function end(): Step {
  return { do: 'end' };
}

/** Does nothing for `ms` milliseconds. */
export function pause(ms: number): Step {
  return { do: 'pause', ms };
}

/**
 * Aborts the connection with a TCP RST. Bytes the client has not read yet when the RST
 * arrives can turn it into a plain EOF on Linux, so pause first when the client must see it.
 */
export function reset(): Step {
  return { do: 'reset' };
}

/** One SMTP reply: every line but the last as "NNN-text", the last as "NNN text" (RFC 5321 4.2). */
export function reply(code: number, lines: readonly string[], eol = '\r\n'): string {
  return lines.map((line, i) => `${code}${i === lines.length - 1 ? ' ' : '-'}${line}${eol}`).join('');
}

export const BANNER = '220 mx.test ESMTP\r\n';
export const STARTTLS_READY = '220 2.0.0 Ready to start TLS\r\n';

/** A server's script up to the client's STARTTLS: banner, EHLO, and a reply that offers it. */
export function untilStarttls(ehlo: readonly string[] = ['mx.test', 'PIPELINING', 'STARTTLS']): Step[] {
  return [send(BANNER), expect(/^EHLO /i), send(reply(250, ehlo)), expect(/^STARTTLS$/i)];
}

/** Answers QUIT with 221 and ends the stream. */
export function answerQuit(): Step[] {
  return [expect(/^QUIT$/i), send('221 2.0.0 Bye\r\n'), end()];
}

export interface ConversationOptions {
  key: string;
  cert: string;
  /** EHLO reply lines before TLS; default a greeting, PIPELINING and STARTTLS */
  ehlo?: readonly string[];
  /** EHLO reply lines after TLS; default a greeting and PIPELINING */
  ehloTls?: readonly string[];
}

/** A well-behaved STARTTLS server's script: banner, EHLO, STARTTLS, TLS, EHLO, QUIT. */
export function starttlsConversation(options: ConversationOptions): Step[] {
  return [
    ...untilStarttls(options.ehlo),
    startTls(STARTTLS_READY, options),
    expect(/^EHLO /i),
    send(reply(250, options.ehloTls ?? ['mx.test', 'PIPELINING'])),
    ...answerQuit(),
  ];
}

export interface ClientLine {
  /** the line without its line ending, latin1 */
  text: string;
  /** whether it came inside TLS */
  tls: boolean;
}

/** Longest client line kept; a longer one is recorded cut at this length. */
const MAX_CLIENT_LINE = 4096;

class ClientGone extends Error {
  constructor() {
    super('client-gone');
  }
}

/** One accepted connection: what the client sent and how the script went. */
export class PeerConnection {
  readonly lines: ClientLine[] = [];
  /** the script ran to its end (false while it runs, or when the client left first) */
  scriptDone = false;
  /** a script step that failed for a reason other than the client leaving */
  failure: string | undefined;
  readonly closed: Promise<void>;

  private stream: Socket;
  private partial = '';
  private nextLine = 0;
  private bytesFromClient = 0;
  private bytesMark = 0;
  private gone = false;
  private wake: (() => void) | undefined;
  private markClosed!: () => void;
  private readonly onPlain = (chunk: Buffer): void => this.receive(chunk, false);

  constructor(
    private readonly socket: Socket,
    private readonly defaultPace: Pace | undefined,
  ) {
    this.stream = socket;
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    socket.setNoDelay(true);
    socket.on('data', this.onPlain);
    this.watch(socket);
  }

  async run(script: readonly Step[]): Promise<void> {
    try {
      for (const step of script) await this.perform(step);
      this.scriptDone = true;
    } catch (error) {
      if (!(error instanceof ClientGone)) this.failure = error instanceof Error ? error.message : String(error);
    }
  }

  destroy(): void {
    this.stream.destroy();
    this.socket.destroy();
  }

  private watch(stream: Socket): void {
    // Resets and broken pipes are how a probe that gives up leaves; the script sees them as
    // the client being gone, through 'close'.
    stream.on('error', () => undefined);
    stream.on('close', () => {
      this.gone = true;
      this.markClosed();
      this.poke();
    });
  }

  private receive(chunk: Buffer, tls: boolean): void {
    this.bytesFromClient += chunk.length;
    const parts = (this.partial + chunk.toString('latin1')).split('\n');
    this.partial = (parts.pop() ?? '').slice(0, MAX_CLIENT_LINE);
    for (const part of parts) this.lines.push({ text: (part.endsWith('\r') ? part.slice(0, -1) : part).slice(0, MAX_CLIENT_LINE), tls });
    this.poke();
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private async until(condition: () => boolean): Promise<void> {
    while (!condition()) {
      if (this.gone) throw new ClientGone();
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private async perform(step: Step): Promise<void> {
    switch (step.do) {
      case 'send':
        return this.write(step.data, step.pace ?? this.defaultPace);
      case 'expect':
        await this.until(() => {
          while (this.nextLine < this.lines.length) {
            const line = this.lines[this.nextLine++] as ClientLine;
            if (step.pattern.test(line.text)) return true;
          }
          return false;
        });
        this.bytesMark = this.bytesFromClient;
        return;
      case 'await-bytes':
        return this.until(() => this.bytesFromClient > this.bytesMark);
      case 'starttls':
        return this.upgrade(step);
      case 'flood':
        return this.flood(step.chunk, step.totalBytes);
      case 'end':
        this.stream.end();
        return;
      case 'pause':
        await new Promise((resolve) => setTimeout(resolve, step.ms));
        return;
      case 'reset':
        this.socket.resetAndDestroy();
        return;
    }
  }

  private async write(data: Buffer, pace: Pace | undefined): Promise<void> {
    if (!pace) return this.writeOnce(data);
    for (let at = 0; at < data.length; at += pace.chunkSize) {
      if (at > 0) await new Promise((resolve) => setTimeout(resolve, pace.pauseMs));
      await this.writeOnce(data.subarray(at, at + pace.chunkSize));
    }
  }

  private writeOnce(data: Buffer): Promise<void> {
    if (this.gone) return Promise.reject(new ClientGone());
    return new Promise((resolve, reject) => this.stream.write(data, (error) => (error ? reject(new ClientGone()) : resolve())));
  }

  private async upgrade(step: Extract<Step, { do: 'starttls' }>): Promise<void> {
    // Stop reading plaintext before the 220 goes out: whatever the client sends next is TLS,
    // and a paused socket keeps it buffered for the TLS layer, which reads it on creation.
    this.socket.removeListener('data', this.onPlain);
    this.socket.pause();
    await this.write(step.reply, this.defaultPace);
    const secure = new TLSSocket(this.socket, { ...step.tls, isServer: true });
    this.stream = secure;
    this.watch(secure);
    secure.on('data', (chunk: Buffer) => this.receive(chunk, true));
    let handshakeDone = false;
    secure.once('secure', () => {
      handshakeDone = true;
      this.poke();
    });
    await this.until(() => handshakeDone);
  }

  private async flood(chunk: Buffer, totalBytes: number): Promise<void> {
    for (let sent = 0; sent < totalBytes; sent += chunk.length) {
      if (this.gone) throw new ClientGone();
      // Backpressure: the peer holds at most one socket buffer, however slowly the client reads.
      if (!this.stream.write(chunk)) await this.drain();
    }
  }

  private async drain(): Promise<void> {
    let drained = false;
    const onDrain = (): void => {
      drained = true;
      this.poke();
    };
    this.stream.once('drain', onDrain);
    try {
      await this.until(() => drained);
    } finally {
      this.stream.removeListener('drain', onDrain);
    }
  }
}

export interface ScriptedPeer {
  port: number;
  readonly connections: PeerConnection[];
  /** every line every client sent, in order */
  clientLines(): ClientLine[];
  close(): Promise<void>;
}

function listenOnLoopback(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

/**
 * Starts a peer on 127.0.0.1 (port 0) that runs `script` on each connection. `pace`, when
 * given, applies to every write of the script (split replies), including the reply to STARTTLS.
 */
export async function startPeer(script: readonly Step[], options: { pace?: Pace } = {}): Promise<ScriptedPeer> {
  const connections: PeerConnection[] = [];
  const server = createServer((socket) => {
    const connection = new PeerConnection(socket, options.pace);
    connections.push(connection);
    void connection.run(script);
  });
  const port = await listenOnLoopback(server);
  return {
    port,
    connections,
    clientLines: () => connections.flatMap((c) => c.lines),
    close: async () => {
      for (const connection of connections) connection.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A loopback port where nothing listens: bound, then closed, so a connection is refused. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  const port = await listenOnLoopback(server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// A listener with backlog 1 that never accepts, filled with connections until one no longer
// completes: Linux then drops further SYNs (tcp_conn_request, accept queue full), so a
// client's connect hangs until its own timeout, with no packet leaving loopback. Node
// accepts every connection itself, so the listener is a small python3 process.
const FULL_BACKLOG_LISTENER = `
import socket, sys
listener = socket.socket()
listener.bind(('127.0.0.1', 0))
listener.listen(1)
port = listener.getsockname()[1]
held = []
while len(held) < 64:
    c = socket.socket()
    c.settimeout(0.3)
    try:
        c.connect(('127.0.0.1', port))
        held.append(c)
    except socket.timeout:
        c.close()
        break
print(port, flush=True)
sys.stdin.read()
`;

export interface BlackHole {
  port: number;
  close(): Promise<void>;
}

/** A loopback port whose accept queue is full: SYNs to it go unanswered. */
export async function startBlackHole(): Promise<BlackHole> {
  const child: ChildProcessWithoutNullStreams = spawn('python3', ['-c', FULL_BACKLOG_LISTENER], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8');
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`black hole listener exited with ${code}`)));
    child.stdout.on('data', (text: string) => {
      output += text;
      const match = /^(\d+)\n/.exec(output);
      if (match) resolve(Number(match[1]));
    });
  });
  return {
    port,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.stdin.end();
      await exited;
    },
  };
}
