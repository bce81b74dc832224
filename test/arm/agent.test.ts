// The probe package as a probe runs it: `npm run package`'s .deb unpacked with dpkg -x, its
// launcher starting the agent with the packaged config and the budget's V8 flags, on the Node
// that test/helpers/node-command.ts names (under `npm run test:arm`, Debian's Node 18 on armhf
// or arm64 in qemu-user; the launcher reads the same SMTP_PROBE_NODE). The agent connects to
// the embedded broker on loopback, the reference controller sends it a measurement of a scripted
// STARTTLS peer, stores the result and acks it, and the agent empties its outbox.

import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PublishedResult } from '../../firmware/agent/protocol';
import { Controller, type EmbeddedBroker, startEmbeddedBroker } from '../../scripts/controller';
import { deriveBudget, readMeasuredCosts } from '../../scripts/package/budget';
import { buildPackage } from '../../scripts/package';
import { testCerts } from '../helpers/certs';
import { outboxEmpty, until, within } from '../helpers/mosquitto';
import { slowdown } from '../helpers/node-command';
import { type ScriptedPeer, startPeer, starttlsConversation } from '../helpers/peers';

/** A functional bound, scaled for an emulated Node (which starts in seconds there). */
const DEADLINE_MS = 12_000 * slowdown();
const PROBE_ID = 'probe-arm';
const MIB = 1024 * 1024;

describe('the packaged agent on the device Node', () => {
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-package-'));
  const root = join(dir, 'root');
  const dataDir = join(dir, 'data');
  const budget = deriveBudget(readMeasuredCosts());
  let broker: EmbeddedBroker;
  let controller: Controller;
  let peer: ScriptedPeer;
  let agent: ChildProcess;
  let exited: Promise<number | null>;
  let log = '';

  before(async () => {
    const deb = await buildPackage(join(dir, 'deb'));
    execFileSync('dpkg', ['-x', deb, root]);
    broker = await startEmbeddedBroker();
    controller = await Controller.start({ brokerUrl: broker.url, resultsFile: join(dir, 'results.jsonl'), protocolVersion: 4 });
    peer = await startPeer(starttlsConversation(testCerts().valid));
    // The packaged config, with what a site adds: the broker, the probe id, a data folder.
    agent = spawn(
      join(root, 'usr', 'bin', 'smtp-probe'),
      ['agent', '--config', join(root, 'etc', 'smtp-probe', 'config.json'), '--broker', broker.url, '--id', PROBE_ID, '--data', dataDir, '--allow-private', '--mqtt-version', '4'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    agent.stderr?.setEncoding('utf8').on('data', (text: string) => (log += text));
    exited = new Promise((resolve) => agent.once('exit', (code) => resolve(code)));
  });

  after(async () => {
    if (agent?.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
    await controller?.close();
    await peer?.close();
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('comes online with the packaged limits, started with the V8 flags of the budget', async (t) => {
    const online = controller.waitForProbes([PROBE_ID], DEADLINE_MS);
    // An agent that exits instead (bad usage, a crash) fails this at once, with its log.
    const quit = exited.then((code) => Promise.reject(new Error(`the agent exited (${code}) before coming online:\n${log}`)));
    await within(Promise.race([online, quit]), () => `${PROBE_ID} online; agent log:\n${log}`, DEADLINE_MS + 1000);
    const status = controller.probes().find((probe) => probe.probe_id === PROBE_ID);
    assert.equal(status?.heap?.limit, budget.config.heap_limit_mb * MIB, JSON.stringify(status));
    // The launcher exec'd Node (or the emulator running it) in its own place: its command line.
    const commandLine = readFileSync(`/proc/${agent.pid}/cmdline`, 'utf8').split('\0');
    t.diagnostic(`agent process: ${commandLine.join(' ')}`);
    for (const flag of budget.nodeFlags) assert.ok(commandLine.includes(flag), `${flag} in ${commandLine.join(' ')}`);
  });

  test('measures on request; the controller stores the result and acks it; the outbox empties', async () => {
    const stored = new Promise<PublishedResult>((resolve) => {
      const onStored = (published: PublishedResult): void => {
        if (published.req_id !== 'arm-1') return;
        controller.removeListener('stored', onStored);
        resolve(published);
      };
      controller.on('stored', onStored);
    });
    const ack = await controller.request(PROBE_ID, { type: 'smtp', target: '127.0.0.1', port: peer.port, timeout: 5_000 * slowdown() }, 'arm-1');
    assert.deepEqual(ack, { req_id: 'arm-1', accepted: true });
    const published = await within(stored, () => `the result; agent log:\n${log}`, DEADLINE_MS);
    assert.equal(published.probe_id, PROBE_ID);
    assert.equal(published.status, 'ok', JSON.stringify(published));
    assert.ok(published.tls?.ver, 'TLS version recorded');
    assert.deepEqual(
      peer.clientLines().map((line) => line.text.split(' ')[0]?.toUpperCase()),
      ['EHLO', 'STARTTLS', 'EHLO', 'QUIT'],
    );
    await until(() => outboxEmpty(dataDir), 'the agent to delete the acked result', DEADLINE_MS);
  });

  test('stops cleanly on SIGTERM', async () => {
    agent.kill('SIGTERM');
    assert.equal(await within(exited, () => `the agent to stop; log:\n${log}`, DEADLINE_MS), 0);
  });
});
