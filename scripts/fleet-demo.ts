// `npm start`: the whole fleet on one machine, on loopback only, with nothing to set up. The
// embedded broker, the reference controller, three probe agents, and three mail servers:
//
//   mx.demo.test      STARTTLS; probe-c's network path runs through a middlebox that strips
//                     the STARTTLS capability, so only probe-c misses it: STRIPPED?
//   mail.demo.test    STARTTLS on every path
//   legacy.demo.test  no STARTTLS on any path (a server that does not offer it: not a stripping)
//
// Each probe network has its own DNS resolver on loopback. The path through the middlebox is
// emulated by probe-c's resolver, which answers mx.demo.test with 127.0.0.2, where the
// stripping proxy sits in front of the real server. The controller sends every probe the same
// request per target, stores the results and prints the per-target, per-probe table.
//
//   tsx scripts/fleet-demo.ts [--keep DIR]     (the results file stays in DIR when given)

import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { type Server, type Socket, createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent } from '../firmware/agent/agent';
import { loadAgentConfig } from '../firmware/agent/config';
import type { MeasurementRequest } from '../firmware/agent/protocol';
import { isAllowedAddress } from '../firmware/measure/address';
import { measure } from '../firmware/measure/driver';
import { Controller, type EmbeddedBroker, STRIPPED_MARK, renderTable, startEmbeddedBroker } from './controller';
import { type Listening, demoCa, startStarttlsPeer, startStrippingProxy } from './demo/peers';

const PROBES = ['probe-a', 'probe-b', 'probe-c'] as const;
const TAMPERED_PROBE = 'probe-c';
const DEADLINE_MS = 60_000;

/**
 * A DNS server on loopback that answers A queries for a fixed set of names (RFC 1035 4.1):
 * NXDOMAIN for other names, an empty answer for other types. Enough for the driver's
 * `resolve4`; nothing is forwarded anywhere.
 */
async function startZone(names: Record<string, string>): Promise<{ server: string; close(): Promise<void> }> {
  const socket: UdpSocket = createSocket('udp4');
  socket.on('message', (query, peer) => {
    const answer = answerQuery(query, names);
    if (answer) socket.send(answer, peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return {
    server: `127.0.0.1:${socket.address().port}`,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}

function answerQuery(query: Buffer, names: Record<string, string>): Buffer | undefined {
  if (query.length < 17 || query.length > 512 || query.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let offset = 12;
  while (offset < query.length && query[offset] !== 0) {
    const length = query[offset];
    if (length > 63 || offset + 1 + length >= query.length) return undefined;
    labels.push(query.toString('latin1', offset + 1, offset + 1 + length));
    offset += 1 + length;
  }
  const questionEnd = offset + 5;
  if (questionEnd > query.length) return undefined;
  const type = query.readUInt16BE(offset + 1);
  const address = names[labels.join('.').toLowerCase()];
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0);
  // QR, the query's opcode and RD, AA; RCODE 3 (NXDOMAIN) for names outside the zone.
  header.writeUInt16BE(0x8400 | (query.readUInt16BE(2) & 0x7900) | (address === undefined ? 3 : 0), 2);
  header.writeUInt16BE(1, 4);
  const answers = address !== undefined && type === 1 ? 1 : 0;
  header.writeUInt16BE(answers, 6);
  const question = query.subarray(12, questionEnd);
  if (answers === 0) return Buffer.concat([header, question]);
  const record = Buffer.alloc(16);
  record.writeUInt16BE(0xc00c, 0);
  record.writeUInt16BE(1, 2);
  record.writeUInt16BE(1, 4);
  record.writeUInt32BE(60, 6);
  record.writeUInt16BE(4, 10);
  address.split('.').forEach((octet, index) => record.writeUInt8(Number(octet), 12 + index));
  return Buffer.concat([header, question, record]);
}

/**
 * Plain TCP forwarding from `host:port` to `upstream`: the port mapping that puts the stripping
 * proxy on probe-c's path at the same port the real server has on the other paths.
 */
async function startRelay(host: string, port: number, upstream: Listening): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const onward = netConnect(upstream.port, upstream.host);
    for (const socket of [client, onward]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        client.destroy();
        onward.destroy();
        sockets.delete(socket);
      });
    }
    client.pipe(onward);
    onward.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Resolves once `count` results are stored, or rejects at the deadline. */
function storedResults(controller: Controller, count: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (controller.counters.stored >= count) return resolve();
    const timer = setTimeout(() => {
      controller.removeListener('stored', onStored);
      reject(new Error(`only ${controller.counters.stored} of ${count} results arrived within ${timeoutMs} ms`));
    }, timeoutMs);
    const onStored = (): void => {
      if (controller.counters.stored < count) return;
      clearTimeout(timer);
      controller.removeListener('stored', onStored);
      resolve();
    };
    controller.on('stored', onStored);
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { keep: { type: 'string' } } });
  const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'smtp-probe-demo-'));
  mkdirSync(dir, { recursive: true });
  const cleanups: Array<() => Promise<void>> = [];
  const say = (line: string): boolean => process.stdout.write(`${line}\n`);
  try {
    const broker: EmbeddedBroker = await startEmbeddedBroker();
    cleanups.push(() => broker.close());
    say(`broker       embedded (aedes, MQTT 3.1.1) on ${broker.url}`);

    const mx = await startStarttlsPeer('127.0.0.1');
    cleanups.push(() => mx.close());
    const mail = await startStarttlsPeer('127.0.0.1');
    cleanups.push(() => mail.close());
    const legacyUpstream = await startStarttlsPeer('127.0.0.1');
    cleanups.push(() => legacyUpstream.close());
    // The demo peers all offer STARTTLS; stripped for everyone, this one stands for a server
    // that does not offer it at all.
    const legacy = await startStrippingProxy(legacyUpstream, 'strip', '127.0.0.1');
    cleanups.push(() => legacy.close());
    const middlebox = await startStrippingProxy(mx, 'strip', '127.0.0.2');
    cleanups.push(() => middlebox.close());
    const tamperedPath = await startRelay('127.0.0.2', mx.port, middlebox);
    cleanups.push(() => tamperedPath.close());

    const cleanZone = { 'mx.demo.test': '127.0.0.1', 'mail.demo.test': '127.0.0.1', 'legacy.demo.test': '127.0.0.1' };
    const clean = await startZone(cleanZone);
    cleanups.push(() => clean.close());
    const tampered = await startZone({ ...cleanZone, 'mx.demo.test': '127.0.0.2' });
    cleanups.push(() => tampered.close());
    say(`mail servers mx.demo.test:${mx.port}  mail.demo.test:${mail.port}  legacy.demo.test:${legacy.port} (no STARTTLS)`);
    say(`middlebox    ${TAMPERED_PROBE} reaches mx.demo.test through a STARTTLS-stripping proxy (its resolver answers 127.0.0.2)`);

    const resultsFile = join(dir, 'results.jsonl');
    const controller = await Controller.start({ brokerUrl: broker.url, resultsFile, protocolVersion: 4 });
    cleanups.push(() => controller.close());
    say(`controller   storing results in ${resultsFile}${values.keep === undefined ? ' (removed at exit; --keep DIR keeps them)' : ''}`);

    for (const probeId of PROBES) {
      const dataDir = join(dir, probeId);
      const loaded = loadAgentConfig(
        ['--broker', broker.url, '--id', probeId, '--data', dataDir, '--allow-private', '--mqtt-version', '4', '--heap-limit-mb', '1024', '--resolver', probeId === TAMPERED_PROBE ? tampered.server : clean.server],
        {},
      );
      if (loaded.kind !== 'config') throw new Error(`agent configuration: ${loaded.kind === 'error' ? loaded.message : 'help'}`);
      const agent = await Agent.start(loaded.config, {
        // The demo servers' certificate comes from the demo CA, which the probes are told to trust.
        measure: (options) => measure({ ...options, ca: [...(options.ca ?? []), demoCa()] }),
        isAllowedAddress,
        log: () => undefined,
      });
      cleanups.push(() => agent.stop());
    }
    await controller.waitForProbes([...PROBES], DEADLINE_MS);
    say(`probes       ${controller.onlineProbes().join(', ')} online`);

    const targets: Array<[string, number]> = [
      ['mx.demo.test', mx.port],
      ['mail.demo.test', mail.port],
      ['legacy.demo.test', legacy.port],
    ];
    const acks = [];
    for (const [target, port] of targets) {
      const request: MeasurementRequest = { type: 'smtp', target, port, sni: 'mx.demo.test', timeout: 10_000 };
      for (const probeId of PROBES) acks.push(controller.request(probeId, request));
    }
    const rejected = (await Promise.all(acks)).filter((ack) => !ack.accepted);
    if (rejected.length > 0) throw new Error(`requests rejected: ${JSON.stringify(rejected)}`);
    say(`requests     ${acks.length} accepted; waiting for the results`);
    await storedResults(controller, acks.length, DEADLINE_MS);

    const rows = controller.table();
    say('');
    process.stdout.write(renderTable(rows));
    const marked = rows.filter((row) => row.stripped).map((row) => `${row.target} ${row.probe}`);
    say('');
    say(`${STRIPPED_MARK} = STARTTLS missing on this probe's path while other probes see it offered: ${marked.join('; ') || 'none'}`);
    const expected = `mx.demo.test:${mx.port} ${TAMPERED_PROBE}`;
    return marked.length === 1 && marked[0] === expected ? 0 : 1;
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup();
    if (values.keep === undefined) rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: Error) => {
    process.stderr.write(`fleet demo failed: ${error.message}\n`);
    process.exit(1);
  },
);
