// The SMTP result schema, in one place. Field names follow RIPE Atlas result conventions
// (fw, mver, lts, timestamp, dst_name, dst_addr, dst_port as a string, src_addr, af, ttr, ttc,
// rt in float milliseconds, err, dnserr) and the TLS part is shaped like an Atlas sslcert
// result (method, ver, server_cipher, cert, alert) so Atlas tooling can read it.

import { FW, MVER } from './version';

export type Status =
  | 'ok'
  | 'dns-error'
  | 'address-not-allowed'
  | 'connect-refused'
  | 'connect-timeout'
  | 'io-timeout'
  | 'closed'
  | 'protocol-error'
  | 'tls-failed'
  | 'rejected'
  | 'limit-exceeded';

export type Phase =
  | 'resolve'
  | 'connect'
  | 'banner'
  | 'ehlo'
  | 'helo'
  | 'starttls'
  | 'tls'
  | 'ehlo_tls'
  | 'envelope'
  | 'quit';

export type Finding =
  | 'starttls-not-supported'
  | 'starttls-capability-mangled'
  | 'starttls-refused'
  | 'tls-handshake-failed'
  | 'certificate-expired'
  | 'certificate-host-mismatch'
  | 'certificate-not-trusted'
  | 'validation-failure'
  | 'starttls-reoffered-after-tls'
  | 'client-blocklisted'
  | 'client-rejected'
  | 'reply-limit-exceeded'
  | 'plaintext-after-starttls'
  | 'bare-lf';

/** One SMTP reply as recorded. `lines` hold the text after "NNN-"/"NNN ", made printable. */
export interface Reply {
  code: number;
  enhanced?: string;
  lines: string[];
  /**
   * ms from the command being sent to the reply's last line; for the banner, from the TCP
   * connection (with implicit TLS from the end of the handshake, whose time is tls.rt).
   */
  rt: number;
}

export type Capabilities = Record<string, string[]>;

export interface EhloReply extends Reply {
  capabilities: Capabilities;
  /** lines that are not valid ehlo-lines (RFC 5321 4.1.1.1), as they came */
  invalid_lines?: string[];
}

export interface TlsAlert {
  level: number;
  description: number;
}

/** Atlas sslcert-shaped TLS facts, plus validation results. */
export interface TlsResult {
  method: 'TLS';
  ver?: string;
  server_cipher?: string;
  cipher_name?: string;
  cert?: string[];
  /** certificates the server sent beyond the kept bound */
  cert_dropped?: number;
  alert?: TlsAlert;
  authorized?: boolean;
  authorization_error?: string;
  hostname?: string;
  sni?: string;
  err?: string;
  rt?: number;
}

export interface MxRecord {
  preference: number;
  exchange: string;
}

export type TranscriptDirection = 'c' | 's' | 'i';

/** One transcript entry: ms since start, direction (client, server, info) and the line. */
export type TranscriptEntry = [number, TranscriptDirection, string];

export interface SmtpResult {
  type: 'smtp';
  fw: number;
  mver: string;
  lts: number;
  timestamp: number;
  msm_id?: number;
  prb_id?: number;
  result_id?: string;
  dst_name: string;
  dst_addr?: string;
  dst_port: string;
  src_addr?: string;
  af: 4 | 6;
  proto: 'TCP';
  mode: 'starttls' | 'implicit-tls' | 'plain';
  ttr?: number;
  ttc?: number;
  rt: number;
  status: Status;
  phase: Phase;
  err?: string;
  dnserr?: string;
  mx?: MxRecord[];
  banner?: Reply;
  ehlo?: EhloReply;
  helo?: Reply;
  starttls?: Reply;
  ehlo_tls?: EhloReply;
  quit?: Reply;
  tls?: TlsResult;
  /** plaintext the server sent after its STARTTLS 220 (discarded, never fed to TLS; RFC 3207 6) */
  plaintext_after_starttls?: string;
  bytes_received: number;
  findings: Finding[];
  transcript?: TranscriptEntry[];
}

/** Rounds a millisecond figure to microseconds: float ms as Atlas reports them. */
export function ms(value: number): number {
  return Math.round(value * 1000) / 1000;
}

export function newResult(fields: {
  dst_name: string;
  dst_port: number;
  af: 4 | 6;
  mode: SmtpResult['mode'];
  timestamp: number;
  lts?: number;
}): SmtpResult {
  // Every field is listed here, in the order results are printed (header, outcome, the
  // conversation, the verdict); fields still undefined at the end are dropped.
  return {
    type: 'smtp',
    fw: FW,
    mver: MVER,
    lts: fields.lts ?? -1,
    timestamp: fields.timestamp,
    msm_id: undefined,
    prb_id: undefined,
    result_id: undefined,
    dst_name: fields.dst_name,
    dst_addr: undefined,
    dst_port: String(fields.dst_port),
    src_addr: undefined,
    af: fields.af,
    proto: 'TCP',
    mode: fields.mode,
    ttr: undefined,
    ttc: undefined,
    rt: 0,
    status: 'ok',
    phase: 'resolve',
    err: undefined,
    dnserr: undefined,
    mx: undefined,
    banner: undefined,
    ehlo: undefined,
    helo: undefined,
    starttls: undefined,
    plaintext_after_starttls: undefined,
    tls: undefined,
    ehlo_tls: undefined,
    quit: undefined,
    bytes_received: 0,
    findings: [],
    transcript: undefined,
  };
}

/** Drops the fields a measurement did not reach, keeping the order of `newResult`. */
export function compactResult(result: SmtpResult): SmtpResult {
  for (const key of Object.keys(result) as (keyof SmtpResult)[]) {
    if (result[key] === undefined) delete result[key];
  }
  return result;
}
