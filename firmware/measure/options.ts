// What one measurement is asked to do, with the defaults a probe uses. Timeouts are tight on
// purpose: a probe runs many measurements and a tarpit must not hold one for minutes.

import { DEFAULT_PHASE_TIMEOUTS, DEFAULT_SESSION_LIMITS, type Mode, type PhaseTimeouts, type SessionLimits } from '../smtp/session';

export interface DriverTimeouts extends PhaseTimeouts {
  resolve: number;
  connect: number;
}

export interface MeasureLimits extends SessionLimits {
  /** certificates of the chain kept in the result */
  maxCerts: number;
}

export interface MeasureOptions {
  /** an IP address, a host name, or with `mx` a mail domain */
  target: string;
  /** default 25; 465 with implicit TLS */
  port?: number;
  /** address family for names: 4 (A) or 6 (AAAA); an IP target sets it itself */
  af?: 4 | 6;
  /** treat the target as a mail domain and measure its best MX (RFC 5321 5.1) */
  mx?: boolean;
  /** starttls (default), implicit-tls (RFC 8314), or plain (never STARTTLS) */
  mode?: Mode;
  /** TLS server name to send and to check the certificate against */
  sni?: string;
  /** EHLO argument; default the address literal of our source address (RFC 5321 4.1.3) */
  helo?: string;
  /** deadline of the whole measurement, ms */
  timeoutMs?: number;
  timeouts?: Partial<DriverTimeouts>;
  /** DNS server "host:port" or "[v6]:port"; default the system's resolvers */
  resolver?: string;
  /** allow loopback, private, link-local and other non-public targets */
  allowPrivate?: boolean;
  /** record a transcript of the conversation */
  transcript?: boolean;
  /** extra trust anchors (PEM), added to Node's roots */
  ca?: string[];
  limits?: Partial<MeasureLimits>;
  msm_id?: number;
  prb_id?: number;
  /** seconds since the last clock sync, when the caller knows it; otherwise -1 */
  lts?: number;
  /** stops the measurement as if its deadline had passed */
  signal?: AbortSignal;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_DRIVER_TIMEOUTS: DriverTimeouts = { ...DEFAULT_PHASE_TIMEOUTS, resolve: 5_000, connect: 5_000 };
export const DEFAULT_MEASURE_LIMITS: MeasureLimits = { ...DEFAULT_SESSION_LIMITS, maxCerts: 10 };
