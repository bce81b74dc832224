// The measurement driver: the only code that touches node:net, node:tls, node:dns and timers.
//
// One measurement = resolve -> connect -> SMTP session (pure, firmware/smtp/session.ts) with
// TLS done here when the session asks for it. The driver owns three timers: the phase timer
// the session arms, the connect timer, and one deadline for the whole measurement. Every path
// ends in `finish`, which clears all timers, closes every socket and settles the promise once,
// so a measurement always ends by its deadline with whatever partial result it has.

import { Resolver } from 'node:dns/promises';
import { Socket, connect as netConnect, isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { type SecureContext, connect as tlsConnect, createSecureContext, rootCertificates, type TLSSocket } from 'node:tls';
import { judge } from '../judge/findings';
import { isHeloArgument, isHostName } from '../names';
import { compactResult, ms, newResult, type MxRecord, type Phase, type SmtpResult, type Status } from '../result';
import { type Action, SmtpSession } from '../smtp/session';
import { printableString } from '../smtp/text';
import { isAllowedAddress } from './address';
import { DEFAULT_DRIVER_TIMEOUTS, DEFAULT_MEASURE_LIMITS, DEFAULT_TIMEOUT_MS, type DriverTimeouts, type MeasureLimits, type MeasureOptions } from './options';
import { alertFromErrorCode, establishedFacts, type TlsValidation } from './tls-facts';

/** MX records kept in a result; a domain with more is unusual and the rest are not measured. */
const MAX_MX_RECORDS = 20;

function errorCode(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && code.length > 0 ? code : 'ERR_UNKNOWN';
}

/** RFC 5321 4.1.3 address literal of our own address, the EHLO argument when no name is set. */
function addressLiteral(address: string): string {
  return isIP(address) === 6 ? `[IPv6:${address}]` : `[${address}]`;
}

/** Secure contexts kept for reuse: building one with a CA list costs more than a handshake. */
const MAX_SECURE_CONTEXTS = 8;
const secureContexts = new Map<string, SecureContext>();

function secureContextFor(extraCa: string[] | undefined): SecureContext {
  const key = extraCa?.join('') ?? '';
  let context = secureContexts.get(key);
  if (!context) {
    context = createSecureContext({
      // TLS 1.0 and old ciphers are allowed so that a server offering only them is measured
      // and its version recorded, not merely failed.
      minVersion: 'TLSv1',
      ciphers: 'DEFAULT:@SECLEVEL=0',
      ...(extraCa ? { ca: [...rootCertificates, ...extraCa] } : {}),
    });
    if (secureContexts.size >= MAX_SECURE_CONTEXTS) secureContexts.delete(secureContexts.keys().next().value as string);
    secureContexts.set(key, context);
  }
  return context;
}

/**
 * One read buffer for every plaintext socket. Each read is handed to the session at once,
 * which copies what it keeps, so a flood of 200 connections costs no 64 KiB buffer per read
 * (memory V8 would collect only after tens of MiB of such garbage).
 */
const PLAIN_READ_BUFFER = new Uint8Array(16 * 1024);

interface Target {
  address: string;
  /** the host name whose address this is (the MX host, or the target name) */
  host?: string;
}

class Measurement {
  private readonly result: SmtpResult;
  private readonly timeouts: DriverTimeouts;
  private readonly limits: MeasureLimits;
  private readonly startedAt = performance.now();
  private settle!: (result: SmtpResult) => void;
  private finished = false;

  private deadlineTimer: NodeJS.Timeout | undefined;
  private phaseTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private resolver: Resolver | undefined;
  private socket: Socket | undefined;
  private tlsSocket: TLSSocket | undefined;
  private tlsPending = false;
  private session: SmtpSession | undefined;
  private validation: TlsValidation | undefined;
  private hostname: string | undefined;
  private readonly onAbort = (): void => this.expire('aborted');

  constructor(private readonly options: MeasureOptions) {
    this.timeouts = { ...DEFAULT_DRIVER_TIMEOUTS, ...options.timeouts };
    this.limits = { ...DEFAULT_MEASURE_LIMITS, ...options.limits };
    const mode = options.mode ?? 'starttls';
    const targetFamily = isIP(options.target);
    this.result = newResult({
      dst_name: options.target,
      dst_port: options.port ?? (mode === 'implicit-tls' ? 465 : 25),
      af: targetFamily === 6 ? 6 : targetFamily === 4 ? 4 : (options.af ?? 4),
      mode,
      timestamp: Math.floor(Date.now() / 1000),
      ...(options.lts !== undefined ? { lts: options.lts } : {}),
    });
    if (options.msm_id !== undefined) this.result.msm_id = options.msm_id;
    if (options.prb_id !== undefined) this.result.prb_id = options.prb_id;
  }

  run(): Promise<SmtpResult> {
    return new Promise<SmtpResult>((resolve) => {
      this.settle = resolve;
      if (this.options.signal?.aborted) return this.end('io-timeout', 'resolve', 'aborted');
      this.options.signal?.addEventListener('abort', this.onAbort, { once: true });
      this.deadlineTimer = setTimeout(() => this.expire('deadline'), this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      this.resolveTarget().then(
        (target) => {
          if (target) this.connect(target);
        },
        (error: unknown) => this.end('dns-error', 'resolve', undefined, errorCode(error)),
      );
    });
  }

  private now(): number {
    return performance.now();
  }

  // ---- resolve ---------------------------------------------------------------------------

  private async resolveTarget(): Promise<Target | undefined> {
    const { target } = this.options;
    if (isIP(target)) return { address: target };
    const started = this.now();
    this.resolver = new Resolver({ timeout: this.timeouts.resolve, tries: 2 });
    if (this.options.resolver) this.resolver.setServers([this.options.resolver]);
    const hosts = this.options.mx ? await this.mxHosts(target) : [target];
    if (this.finished || hosts === undefined) return undefined;
    let lastError: unknown;
    for (const host of hosts) {
      try {
        const addresses = this.result.af === 6 ? await this.resolver.resolve6(host) : await this.resolver.resolve4(host);
        if (this.finished) return undefined;
        const address = addresses[0];
        if (address !== undefined) {
          this.result.ttr = ms(this.now() - started);
          return { address, host };
        }
      } catch (error) {
        if (this.finished) return undefined;
        lastError = error;
      }
    }
    this.result.ttr = ms(this.now() - started);
    this.end('dns-error', 'resolve', undefined, errorCode(lastError));
    return undefined;
  }

  /** MX hosts, best preference first (RFC 5321 5.1); the domain itself when it has no MX. */
  private async mxHosts(domain: string): Promise<string[] | undefined> {
    const resolver = this.resolver as Resolver;
    let records: MxRecord[];
    try {
      records = (await resolver.resolveMx(domain)).map((r) => ({ preference: r.priority, exchange: r.exchange }));
    } catch (error) {
      // RFC 5321 5.1: with no MX records the domain is its own implicit MX.
      if (errorCode(error) === 'ENODATA') return [domain];
      throw error;
    }
    records.sort((a, b) => a.preference - b.preference || a.exchange.localeCompare(b.exchange));
    this.result.mx = records.slice(0, MAX_MX_RECORDS).map((r) => ({ preference: r.preference, exchange: printableString(r.exchange) }));
    // RFC 7505 3: a single MX of "." says the domain accepts no mail.
    if (records.length === 1 && (records[0]?.exchange === '' || records[0]?.exchange === '.')) {
      this.end('dns-error', 'resolve', undefined, 'NULL_MX');
      return undefined;
    }
    return records.slice(0, MAX_MX_RECORDS).map((r) => r.exchange).filter((name) => name !== '' && name !== '.');
  }

  // ---- connect ---------------------------------------------------------------------------

  private connect(target: Target): void {
    const { address, host } = target;
    this.result.dst_addr = address;
    this.result.af = isIP(address) === 6 ? 6 : 4;
    if (!this.options.allowPrivate && !isAllowedAddress(address)) {
      return this.end('address-not-allowed', 'connect', 'address-not-allowed');
    }
    const targetName = isIP(this.options.target) ? undefined : host;
    this.hostname = this.options.sni ?? targetName ?? address;
    const started = this.now();
    const socket = netConnect({
      host: address,
      port: Number(this.result.dst_port),
      family: this.result.af,
      onread: {
        buffer: PLAIN_READ_BUFFER,
        callback: (length: number, buffer: Uint8Array) => {
          this.onPlainData(buffer.subarray(0, length));
          return true;
        },
      },
    });
    this.socket = socket;
    socket.setNoDelay(true);
    this.connectTimer = setTimeout(() => this.end('connect-timeout', 'connect', 'connect-timeout'), this.timeouts.connect);
    socket.once('connect', () => {
      clearTimeout(this.connectTimer);
      this.result.ttc = ms(this.now() - started);
      if (socket.localAddress) this.result.src_addr = socket.localAddress;
      this.startSession(socket);
    });
    socket.on('error', (error) => {
      if (!this.session) this.end('connect-refused', 'connect', errorCode(error));
      else if (!this.tlsSocket) this.apply(this.session.closed(this.now(), errorCode(error)));
    });
  }

  // ---- session ---------------------------------------------------------------------------

  private startSession(socket: Socket): void {
    const session = new SmtpSession({
      mode: this.result.mode,
      startedAt: this.startedAt,
      timeouts: this.timeouts,
      limits: this.limits,
      transcript: this.options.transcript ?? false,
    });
    this.session = session;
    socket.on('end', this.onPlainEnd);
    this.apply(session.connected(this.now(), this.options.helo ?? addressLiteral(socket.localAddress ?? '0.0.0.0')));
  }

  private onPlainData(chunk: Uint8Array): void {
    // Until STARTTLS hands the socket to TLS; after that the TLS layer reads it (RFC 3207 4).
    if (this.session && !this.tlsSocket) this.apply(this.session.receive(chunk, this.now()));
  }

  private readonly onPlainEnd = (): void => {
    if (this.session && !this.tlsSocket) this.apply(this.session.closed(this.now()));
  };

  private apply(actions: Action[]): void {
    for (const action of actions) {
      if (this.finished) return;
      switch (action.type) {
        case 'write':
          (this.tlsSocket ?? this.socket)?.write(action.data);
          break;
        case 'start-tls':
          this.startTls();
          break;
        case 'arm-timer':
          clearTimeout(this.phaseTimer);
          this.phaseTimer = setTimeout(() => {
            if (this.session) this.apply(this.session.timerExpired(this.now(), 'phase'));
          }, action.ms);
          break;
        case 'close':
          this.end();
          break;
      }
    }
  }

  // ---- TLS -------------------------------------------------------------------------------

  private startTls(): void {
    const socket = this.socket as Socket;
    const session = this.session as SmtpSession;
    // From here on every byte from the server belongs to TLS (RFC 3207 4): the plaintext
    // handlers (onPlainData, onPlainEnd) ignore the socket once tlsSocket is set, below.
    const sni = this.options.sni ?? (this.hostname !== undefined && isIP(this.hostname) === 0 ? this.hostname : undefined);
    const started = this.now();
    this.tlsPending = true;
    const tlsSocket = tlsConnect({
      socket,
      ...(sni !== undefined ? { servername: sni } : {}),
      secureContext: secureContextFor(this.options.ca),
      // Opportunistic TLS (RFC 7435): the handshake must succeed whatever the certificate, so
      // that it can be recorded; validity is judged afterwards.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    this.tlsSocket = tlsSocket;
    const failed = (code: string): void => {
      if (!this.tlsPending || this.finished) return;
      this.tlsPending = false;
      this.result.tls = { method: 'TLS', err: code, rt: ms(this.now() - started), ...(this.hostname ? { hostname: this.hostname } : {}), ...(sni ? { sni } : {}) };
      const alert = alertFromErrorCode(code);
      if (alert) this.result.tls.alert = alert;
      this.apply(session.tlsFailed(this.now(), code));
    };
    tlsSocket.once('secureConnect', () => {
      if (this.finished) return;
      this.tlsPending = false;
      const facts = establishedFacts(tlsSocket, this.hostname ?? '', sni, this.limits.maxCerts, Date.now());
      facts.tls.rt = ms(this.now() - started);
      this.result.tls = facts.tls;
      this.validation = facts.validation;
      tlsSocket.on('data', (chunk: Buffer) => this.apply(session.receive(chunk, this.now())));
      this.apply(session.tlsEstablished(this.now()));
    });
    tlsSocket.on('error', (error) => {
      if (this.tlsPending) failed(errorCode(error));
      else this.apply(session.closed(this.now(), errorCode(error)));
    });
    tlsSocket.on('end', () => {
      if (this.tlsPending) failed('eof-in-tls-handshake');
      else this.apply(session.closed(this.now()));
    });
    tlsSocket.on('close', () => {
      if (this.tlsPending) failed('eof-in-tls-handshake');
      else this.apply(session.closed(this.now()));
    });
  }

  // ---- the end ---------------------------------------------------------------------------

  /** The deadline passed (or the caller aborted): end in whatever phase we are in. */
  private expire(reason: 'deadline' | 'aborted'): void {
    if (this.finished) return;
    if (this.session) {
      this.apply(this.session.timerExpired(this.now(), reason));
      this.end();
    } else if (this.socket) {
      this.end('connect-timeout', 'connect', reason);
    } else {
      this.end('dns-error', 'resolve', reason, 'ETIMEOUT');
    }
  }

  /**
   * Settles the measurement once. With a status, the driver ended it (resolve and connect
   * failures); without, the session's record says how it ended.
   */
  private end(status?: Status, phase?: Phase, err?: string, dnserr?: string): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.deadlineTimer);
    clearTimeout(this.phaseTimer);
    clearTimeout(this.connectTimer);
    this.options.signal?.removeEventListener('abort', this.onAbort);
    this.resolver?.cancel();
    this.tlsSocket?.destroy();
    this.socket?.destroy();

    const result = this.result;
    const record = this.session?.record;
    if (status && phase) {
      result.status = status;
      result.phase = phase;
      if (err !== undefined) result.err = err;
      if (dnserr !== undefined) result.dnserr = dnserr;
    } else if (record) {
      result.status = record.status;
      result.phase = record.phase;
      if (record.err !== undefined) result.err = record.err;
    }
    if (record) {
      const { banner, ehlo, helo, starttls, ehlo_tls, quit, plaintext_after_starttls, transcript } = record;
      Object.assign(result, { banner, ehlo, helo, starttls, ehlo_tls, quit, plaintext_after_starttls });
      result.bytes_received = record.bytes_received;
      if (transcript) result.transcript = transcript;
    }
    result.rt = ms(this.now() - this.startedAt);
    result.findings = judge(result, { ...(this.validation ? { validation: this.validation } : {}), bareLf: record?.bare_lf ?? false });
    this.settle(compactResult(result));
  }
}

/**
 * Runs one SMTP measurement; never rejects: every failure of the network or the server is a
 * result with a status. Options that could change what is sent (a HELO name or SNI that is
 * not a name) are the caller's error and throw before anything is sent.
 */
export function measure(options: MeasureOptions): Promise<SmtpResult> {
  if (options.helo !== undefined && !isHeloArgument(options.helo)) throw new RangeError(`helo must be a host name or an address literal: ${JSON.stringify(options.helo)}`);
  if (options.sni !== undefined && !isHostName(options.sni)) throw new RangeError(`sni must be a host name: ${JSON.stringify(options.sni)}`);
  return new Measurement(options).run();
}
