// A real dnsmasq (Debian `dnsmasq-base`) serving a test zone on a loopback port, so that name
// and MX resolution is tested against a real DNS server and never the system's resolver.
// Authoritative for `.test` only (`--local`), with no upstream: nothing leaves the machine.

import { type ChildProcess, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { freeLoopbackPorts } from './ports';
import { realPartMissing } from './skip';

export interface DnsRecords {
  /** name -> IPv4 and IPv6 addresses */
  hosts: Record<string, string[]>;
  /** domain -> [preference, exchange] */
  mx?: Record<string, [number, string][]>;
  /** PTR: address -> name */
  ptr?: Record<string, string>;
}

export interface Dnsmasq {
  /** "127.0.0.1:PORT", for `--resolver` / MeasureOptions.resolver */
  server: string;
  stop(): Promise<void>;
}

const DNSMASQ = '/usr/sbin/dnsmasq';

export function dnsmasqInstalled(): boolean {
  return existsSync(DNSMASQ);
}

/** False where dnsmasq can run, else the reason to skip (see realPartMissing). */
export function skipWithoutDnsmasq(): string | false {
  if (dnsmasqInstalled()) return false;
  return realPartMissing('dnsmasq', `${DNSMASQ} is not installed (Debian: apt-get install dnsmasq-base)`);
}

/** Answers once dnsmasq answers a query on `port` (any answer will do). */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    // A minimal query: id 1, RD, one question "test. SOA IN".
    const query = Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, 0x74, 0x65, 0x73, 0x74, 0, 0, 6, 0, 1]);
    const timer = setTimeout(() => {
      socket.close();
      resolve(false);
    }, 200);
    socket.once('message', () => {
      clearTimeout(timer);
      socket.close();
      resolve(true);
    });
    socket.send(query, port, '127.0.0.1');
  });
}

export async function startDnsmasq(records: DnsRecords): Promise<Dnsmasq> {
  const [port] = (await freeLoopbackPorts(1)) as [number];
  const args = [
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--no-poll',
    '--pid-file=',
    '--user=root',
    '--bind-interfaces',
    '--listen-address=127.0.0.1',
    `--port=${port}`,
    '--local=/test/',
    '--log-facility=-',
  ];
  for (const [name, addresses] of Object.entries(records.hosts)) args.push(`--host-record=${name},${addresses.join(',')}`);
  for (const [domain, list] of Object.entries(records.mx ?? {})) {
    for (const [preference, exchange] of list) args.push(`--mx-host=${domain},${exchange},${preference}`);
  }
  for (const [address, name] of Object.entries(records.ptr ?? {})) args.push(`--ptr-record=${reverseName(address)},${name}`);
  const child: ChildProcess = spawn(DNSMASQ, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk.slice(0, 4096)));
  const deadline = Date.now() + 5000;
  while (!(await answers(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`dnsmasq did not start on 127.0.0.1:${port}: ${stderr}`);
    }
  }
  return {
    server: `127.0.0.1:${port}`,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** in-addr.arpa / ip6.arpa name of an address (RFC 1035 3.5, RFC 3596 2.5). */
export function reverseName(address: string): string {
  if (address.includes('.')) return address.split('.').reverse().join('.') + '.in-addr.arpa';
  const groups = address.split('::');
  const head = groups[0] ? groups[0].split(':') : [];
  const tail = groups[1] ? groups[1].split(':') : [];
  const full = [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail].map((g) => g.padStart(4, '0')).join('');
  return full.split('').reverse().join('.') + '.ip6.arpa';
}
