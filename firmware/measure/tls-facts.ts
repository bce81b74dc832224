// Facts about an established (or failed) TLS session, in the shape of an Atlas sslcert
// result: version "1.2"/"1.3", `server_cipher` as the IANA code "0x1302", the chain as PEM,
// and alerts as RFC numbers. Validation is split so every finding can be reported: Node
// reports only one chain error and skips the name check when the chain fails, so the name
// (RFC 6125) and the validity period are checked here on their own.

import type { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { TlsAlert, TlsResult } from '../result';

// IANA TLS Cipher Suites registry codes for the suites OpenSSL negotiates in practice.
const CIPHER_CODES: Record<string, number> = {
  TLS_AES_128_GCM_SHA256: 0x1301,
  TLS_AES_256_GCM_SHA384: 0x1302,
  TLS_CHACHA20_POLY1305_SHA256: 0x1303,
  TLS_AES_128_CCM_SHA256: 0x1304,
  TLS_AES_128_CCM_8_SHA256: 0x1305,
  TLS_RSA_WITH_3DES_EDE_CBC_SHA: 0x000a,
  TLS_RSA_WITH_AES_128_CBC_SHA: 0x002f,
  TLS_RSA_WITH_AES_256_CBC_SHA: 0x0035,
  TLS_RSA_WITH_AES_128_CBC_SHA256: 0x003c,
  TLS_RSA_WITH_AES_256_CBC_SHA256: 0x003d,
  TLS_RSA_WITH_AES_128_GCM_SHA256: 0x009c,
  TLS_RSA_WITH_AES_256_GCM_SHA384: 0x009d,
  TLS_DHE_RSA_WITH_AES_128_GCM_SHA256: 0x009e,
  TLS_DHE_RSA_WITH_AES_256_GCM_SHA384: 0x009f,
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: 0xc009,
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: 0xc00a,
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: 0xc013,
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: 0xc014,
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256: 0xc023,
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384: 0xc024,
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256: 0xc027,
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384: 0xc028,
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 0xc02b,
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 0xc02c,
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 0xc02f,
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 0xc030,
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 0xcca8,
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 0xcca9,
  TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 0xccaa,
};

// RFC 8446 6 / RFC 5246 7.2 alert descriptions, by the names OpenSSL puts in its error codes.
const ALERT_CODES: Record<string, number> = {
  CLOSE_NOTIFY: 0,
  UNEXPECTED_MESSAGE: 10,
  BAD_RECORD_MAC: 20,
  DECRYPTION_FAILED: 21,
  RECORD_OVERFLOW: 22,
  DECOMPRESSION_FAILURE: 30,
  HANDSHAKE_FAILURE: 40,
  NO_CERTIFICATE: 41,
  BAD_CERTIFICATE: 42,
  UNSUPPORTED_CERTIFICATE: 43,
  CERTIFICATE_REVOKED: 44,
  CERTIFICATE_EXPIRED: 45,
  CERTIFICATE_UNKNOWN: 46,
  ILLEGAL_PARAMETER: 47,
  UNKNOWN_CA: 48,
  ACCESS_DENIED: 49,
  DECODE_ERROR: 50,
  DECRYPT_ERROR: 51,
  PROTOCOL_VERSION: 70,
  INSUFFICIENT_SECURITY: 71,
  INTERNAL_ERROR: 80,
  INAPPROPRIATE_FALLBACK: 86,
  USER_CANCELLED: 90,
  NO_RENEGOTIATION: 100,
  MISSING_EXTENSION: 109,
  UNSUPPORTED_EXTENSION: 110,
  UNRECOGNIZED_NAME: 112,
  BAD_CERTIFICATE_STATUS_RESPONSE: 113,
  UNKNOWN_PSK_IDENTITY: 115,
  CERTIFICATE_REQUIRED: 116,
  NO_APPLICATION_PROTOCOL: 120,
};

/** The alert a server sent, from an OpenSSL error code like ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION. */
export function alertFromErrorCode(code: string | undefined): TlsAlert | undefined {
  const match = /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_([A-Z_]+)$/.exec(code ?? '');
  const description = match ? ALERT_CODES[match[1] as string] : undefined;
  // Every alert that ends a handshake is fatal (level 2, RFC 8446 6.2).
  return description === undefined ? undefined : { level: 2, description };
}

/**
 * The chain exactly as the server sent it, leaf first, as PEM, keeping at most `maxCerts`.
 * X509Certificate.issuerCertificate follows the certificates the peer sent; the older
 * getPeerCertificate(true) also appends issuers found in the local trust store, and parses
 * every field of every certificate, which costs more than the rest of a measurement.
 */
function chainOf(leaf: X509Certificate | undefined, maxCerts: number): { cert: string[]; dropped: number } {
  const cert: string[] = [];
  let dropped = 0;
  const seen = new Set<string>();
  for (let current = leaf; current; current = current.issuerCertificate) {
    const fingerprint = current.fingerprint256;
    // A self-issued certificate can name itself as its issuer: stop at any repetition.
    if (seen.has(fingerprint)) break;
    seen.add(fingerprint);
    if (cert.length < maxCerts) cert.push(current.toString());
    else dropped++;
  }
  return { cert, dropped };
}

// Node / OpenSSL verification codes that mean "no path to a trusted root" (RFC 8460: certificate-not-trusted).
const UNTRUSTED = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_UNTRUSTED',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
]);

export interface TlsValidation {
  /** the chain error Node reported, if any (OpenSSL verify code) */
  chainError?: string;
  nameError?: string;
  expired: boolean;
  untrusted: boolean;
}

export interface TlsFacts {
  tls: TlsResult;
  validation: TlsValidation;
}

/** Collects the facts of an established TLS session; `hostname` is the name the chain must be valid for. */
export function establishedFacts(socket: TLSSocket, hostname: string, sni: string | undefined, maxCerts: number, nowMs: number): TlsFacts {
  const protocol = socket.getProtocol() ?? '';
  const cipher = socket.getCipher();
  const leaf = socket.getPeerX509Certificate();
  const { cert, dropped } = chainOf(leaf, maxCerts);
  const tls: TlsResult = { method: 'TLS' };
  const ver = /^TLSv(1(?:\.\d)?)$/.exec(protocol)?.[1];
  if (ver) tls.ver = ver === '1' ? '1.0' : ver;
  const code = CIPHER_CODES[cipher.standardName];
  if (code !== undefined) tls.server_cipher = '0x' + code.toString(16).padStart(4, '0');
  tls.cipher_name = cipher.standardName;
  tls.cert = cert;
  if (dropped > 0) tls.cert_dropped = dropped;
  tls.hostname = hostname;
  if (sni) tls.sni = sni;

  const validation: TlsValidation = { expired: false, untrusted: false };
  const chainError = socket.authorizationError ? String(socket.authorizationError) : undefined;
  if (chainError) validation.chainError = chainError;
  validation.untrusted = chainError !== undefined && UNTRUSTED.has(chainError);
  if (leaf) {
    validation.expired =
      nowMs > Date.parse(leaf.validTo) || nowMs < Date.parse(leaf.validFrom) || chainError === 'CERT_HAS_EXPIRED' || chainError === 'CERT_NOT_YET_VALID';
    // RFC 6125 6.4: DNS-ID matching, a wildcard only as the whole left-most label; an IP
    // address is matched against iPAddress subjectAltNames.
    const matches = isIP(hostname) ? leaf.checkIP(hostname) !== undefined : leaf.checkHost(hostname, { subject: 'default', partialWildcards: false }) !== undefined;
    if (!matches) validation.nameError = 'ERR_TLS_CERT_ALTNAME_INVALID';
  } else {
    validation.nameError = 'NO_PEER_CERTIFICATE';
  }
  if (validation.expired && !chainError) validation.chainError = 'CERT_HAS_EXPIRED';
  tls.authorized = !validation.chainError && !validation.nameError && !validation.expired;
  const authorizationError = validation.chainError ?? validation.nameError;
  if (authorizationError) tls.authorization_error = authorizationError;
  return { tls, validation };
}
