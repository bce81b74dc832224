// A readable summary of one result, for a person at a terminal (`measure --pretty`, demos).
// The JSON result stays the contract; this is only a view of it.

import type { EhloReply, Reply, SmtpResult } from './result';

function replyText(reply: Reply): string {
  const first = reply.lines[0] ?? '';
  const more = reply.lines.length > 1 ? ` (+${reply.lines.length - 1} lines)` : '';
  return `${reply.code}${reply.enhanced ? ' ' + reply.enhanced : ''} ${first}${more}`.trimEnd();
}

function capabilityList(reply: EhloReply): string {
  const names = Object.keys(reply.capabilities);
  return names.length > 0 ? names.join(' ') : '(none)';
}

function row(label: string, text: string, rt?: number): string {
  const time = rt === undefined ? '' : `  ${rt.toFixed(1)} ms`;
  return `  ${label.padEnd(9)} ${text}${time}`;
}

export function prettyResult(result: SmtpResult): string {
  const where = `${result.dst_addr ?? result.dst_name}:${result.dst_port}`;
  const name = result.dst_addr && result.dst_name !== result.dst_addr ? ` (${result.dst_name})` : '';
  const outcome = result.status === 'ok' ? 'ok' : `${result.status} in ${result.phase}${result.err ? ` (${result.err})` : ''}`;
  const lines = [`${where}${name}  ${result.mode}  ${outcome}  ${result.rt.toFixed(1)} ms`];
  if (result.mx) lines.push(row('MX', result.mx.map((m) => `${m.preference} ${m.exchange}`).join(', ')));
  if (result.dnserr) lines.push(row('DNS', result.dnserr, result.ttr));
  if (result.ttc !== undefined) lines.push(row('connect', `from ${result.src_addr ?? '?'}`, result.ttc));
  if (result.banner) lines.push(row('banner', replyText(result.banner), result.banner.rt));
  if (result.ehlo) lines.push(row('EHLO', `${result.ehlo.code} ${capabilityList(result.ehlo)}`, result.ehlo.rt));
  if (result.helo) lines.push(row('HELO', replyText(result.helo), result.helo.rt));
  if (result.starttls) lines.push(row('STARTTLS', replyText(result.starttls), result.starttls.rt));
  if (result.tls) {
    const tls = result.tls;
    const what = tls.err
      ? `failed: ${tls.err}${tls.alert ? ` (alert ${tls.alert.description})` : ''}`
      : `TLS ${tls.ver ?? '?'} ${tls.cipher_name ?? ''}${tls.server_cipher ? ` (${tls.server_cipher})` : ''}, ` +
        (tls.authorized ? `certificate valid for ${tls.hostname ?? '?'}` : `certificate NOT valid for ${tls.hostname ?? '?'}: ${tls.authorization_error ?? 'unknown'}`);
    lines.push(row('TLS', what, tls.rt));
  }
  if (result.ehlo_tls) lines.push(row('EHLO', `${result.ehlo_tls.code} ${capabilityList(result.ehlo_tls)} (inside TLS)`, result.ehlo_tls.rt));
  if (result.quit) lines.push(row('QUIT', replyText(result.quit), result.quit.rt));
  lines.push(row('findings', result.findings.length > 0 ? result.findings.join(', ') : 'none'));
  return lines.join('\n');
}
