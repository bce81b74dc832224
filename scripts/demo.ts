// The one-machine demo of the measurement engine: a STARTTLS mail server on loopback, the
// same server behind a proxy that strips STARTTLS, and behind one that mangles it into
// XXXXXXXA, each measured by the built bundle (`dist/smtp-probe.js measure`), shown side by
// side. Nothing to set up: the servers are started here and stopped at the end.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { prettyResult } from '../firmware/pretty';
import type { SmtpResult } from '../firmware/result';
import { type Listening, demoCaFile, startStarttlsPeer, startStrippingProxy } from './demo/peers';

const root = join(__dirname, '..');
const bundle = join(root, 'dist', 'smtp-probe.js');

function runBundle(args: string[]): Promise<SmtpResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bundle, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('close', () => {
      try {
        resolve(JSON.parse(out) as SmtpResult);
      } catch {
        reject(new Error(`no JSON result from smtp-probe ${args.join(' ')}: ${out.slice(0, 200)}`));
      }
    });
  });
}

function starttlsColumn(result: SmtpResult): string {
  if (!result.ehlo) return '-';
  return 'STARTTLS' in result.ehlo.capabilities ? 'offered' : 'NOT offered';
}

async function main(): Promise<void> {
  const servers: Listening[] = [];
  try {
    const peer = await startStarttlsPeer();
    servers.push(peer);
    const stripped = await startStrippingProxy(peer, 'strip');
    servers.push(stripped);
    const mangled = await startStrippingProxy(peer, 'mangle');
    servers.push(mangled);
    const paths = [
      { label: 'direct', port: peer.port },
      { label: 'via stripping proxy', port: stripped.port },
      { label: 'via mangling proxy', port: mangled.port },
    ];
    console.log(`A STARTTLS mail server (mx.demo.test) listens on 127.0.0.1:${peer.port}; two man-in-the-middle proxies sit in front of it.\n`);
    const results: SmtpResult[] = [];
    for (const path of paths) {
      const args = ['measure', '127.0.0.1', '--port', String(path.port), '--allow-private', '--sni', 'mx.demo.test', '--ca', demoCaFile, '--timeout', '10000'];
      console.log(`== ${path.label}: smtp-probe ${args.join(' ')}`);
      const result = await runBundle(args);
      results.push(result);
      console.log(prettyResult(result) + '\n');
    }
    console.log('Side by side:');
    const header = ['path', 'status', 'STARTTLS', 'TLS', 'findings'];
    const rows = paths.map((path, i) => {
      const r = results[i] as SmtpResult;
      return [path.label, r.status, starttlsColumn(r), r.tls?.ver ? `TLS ${r.tls.ver}` : 'none', r.findings.join(', ') || 'none'];
    });
    const widths = header.map((h, col) => Math.max(h.length, ...rows.map((row) => (row[col] as string).length)));
    for (const row of [header, ...rows]) console.log(('  ' + row.map((cell, col) => cell.padEnd(widths[col] as number)).join('  ')).trimEnd());
    console.log('\nThe same server, three paths: only the direct path gets TLS. A probe fleet sees this as one path where STARTTLS vanishes while everywhere else it is offered.');
  } finally {
    await Promise.all(servers.map((s) => s.close()));
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
