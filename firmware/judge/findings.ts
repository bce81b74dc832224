// Findings: what a finished measurement means, as stable codes. Where RFC 8460 (TLS-RPT) has
// a word for it we use that word; the rest are ours (DESIGN.md, "Result format"). Judging is
// a pure function of the result and the validation facts, so it is table-tested.

import { hasCapability, hasMangledStarttls } from '../smtp/capabilities';
import type { Finding, Reply, SmtpResult } from '../result';
import type { TlsValidation } from '../measure/tls-facts';

export interface JudgeFacts {
  validation?: TlsValidation;
  bareLf: boolean;
}

// Reply texts that name a DNS blocklist (or the common ways of saying one was hit).
const BLOCKLIST_TEXT =
  /\b(?:spamhaus|spamcop|barracuda|sorbs|uceprotect|dnsbl|rbl|blocklist(?:ed)?|blacklist(?:ed)?|block list|black list|blocked using|listed (?:at|in|on|by))\b/i;

/** Replies that speak to our client before TLS, in the order they came. */
function clientFacingReplies(result: SmtpResult): Reply[] {
  return [result.banner, result.ehlo, result.helo].filter((r): r is Reply => r !== undefined);
}

function isRejection(reply: Reply): boolean {
  if (reply.code < 400) return false;
  // RFC 3463 3.8: X.7.X is "security or policy status": the server refuses us, not itself.
  if (reply.enhanced && reply.enhanced.split('.')[1] === '7') return true;
  // 554 at the greeting is "no SMTP service here" for this client (RFC 5321 3.1), and 550-554
  // refuse the request for policy reasons; 500-504 only say a command is not understood or
  // implemented (4.2.2), which is how an old server answers EHLO before we fall back to HELO.
  // A 421 or 450 without a policy code is a busy server, not a rejection of us.
  return reply.code >= 550;
}

export function judge(result: SmtpResult, facts: JudgeFacts): Finding[] {
  const findings = new Set<Finding>();
  const ehlo = result.ehlo;

  if (result.mode === 'starttls' && result.status !== 'rejected') {
    if (ehlo && ehlo.code === 250 && !hasCapability(ehlo.capabilities, 'STARTTLS')) {
      findings.add('starttls-not-supported');
      if (hasMangledStarttls(ehlo.capabilities)) findings.add('starttls-capability-mangled');
    } else if (result.helo && result.helo.code === 250) {
      // Without EHLO there is no way to ask for STARTTLS (RFC 3207 4).
      findings.add('starttls-not-supported');
    }
  }
  // A 4xx/5xx to STARTTLS after it was offered (454 "TLS not available", 501, 5xx). Any
  // other non-220 reply is a protocol error, not a refusal.
  if (result.starttls && result.starttls.code >= 400) findings.add('starttls-refused');
  if (result.plaintext_after_starttls !== undefined) findings.add('plaintext-after-starttls');

  if (result.status === 'tls-failed') findings.add('tls-handshake-failed');
  const validation = facts.validation;
  if (validation) {
    if (validation.expired) findings.add('certificate-expired');
    if (validation.nameError) findings.add('certificate-host-mismatch');
    if (validation.untrusted) findings.add('certificate-not-trusted');
    else if (validation.chainError && !validation.expired) findings.add('validation-failure');
  }
  if (result.ehlo_tls && result.ehlo_tls.code === 250 && hasCapability(result.ehlo_tls.capabilities, 'STARTTLS')) {
    findings.add('starttls-reoffered-after-tls');
  }

  for (const reply of clientFacingReplies(result)) {
    if (reply.code < 400) continue;
    if (reply.lines.some((line) => BLOCKLIST_TEXT.test(line))) findings.add('client-blocklisted');
    if (isRejection(reply)) findings.add('client-rejected');
  }
  if (result.status === 'limit-exceeded') findings.add('reply-limit-exceeded');
  if (facts.bareLf) findings.add('bare-lf');
  return [...findings];
}
