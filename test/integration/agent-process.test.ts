// `smtp-probe agent` as a process (test/helpers/agent-entry.ts: the agent command with a fake
// SMTP driver): usage errors, SIGKILL mid-run and restart with nothing lost, and a clean stop
// on SIGTERM.

import assert from 'node:assert/strict';
import { build } from 'esbuild';
import { type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bundleOptions } from '../../build.config';
import type { MeasurementRequest } from '../../firmware/agent/protocol';
import { type EmbeddedBroker, startEmbeddedBroker } from '../../scripts/controller/broker';
import { TestController, tempDataDir, waitFor } from '../helpers/agent-harness';
import { slowdown, spawnNode } from '../helpers/node-command';

// The entry is built once with the bundle's own esbuild options, so the child starts as fast
// as the shipped bundle does, natively and on the ARM Node under emulation alike.
let entry: string;

before(async () => {
  entry = join(mkdtempSync(join(tmpdir(), 'smtp-probe-agent-entry-')), 'agent-entry.js');
  await build({ ...bundleOptions, entryPoints: [join(__dirname, '..', 'helpers', 'agent-entry.ts')], outfile: entry, metafile: false, minify: false, banner: {} });
});
const REQUEST: MeasurementRequest = { type: 'smtp', target: 'mx.example.org', port: 25 };

interface AgentProcess {
  child: ChildProcessWithoutNullStreams;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function runAgent(args: string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  const child = spawnNode([entry, ...args], { env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    if (stderr.length < 1_000_000) stderr += text;
  });
  child.stdout.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, stderr: () => stderr, exited };
}

describe('agent process', () => {
  test('bad usage: a clear message on stderr and exit status 2', async () => {
    for (const args of [['--bogus'], ['--broker', 'mqtt://127.0.0.1:1', '--id', 'p'], ['--broker', 'http://x', '--id', 'p', '--data', '/tmp/x']]) {
      const agent = runAgent(args, { SMTP_PROBE_BROKER: '', SMTP_PROBE_ID: '', SMTP_PROBE_DATA: '', SMTP_PROBE_CONFIG: '' });
      const { code } = await agent.exited;
      assert.equal(code, 2, agent.stderr());
      assert.match(agent.stderr(), /^smtp-probe agent: .+\nRun 'smtp-probe agent --help' for the settings\.\n$/);
    }
  });

  test('--help prints the settings and exits 0', async () => {
    const agent = runAgent(['--help']);
    let stdout = '';
    agent.child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    assert.equal((await agent.exited).code, 0);
    assert.match(stdout, /--broker URL +mqtt:\/\/HOST/);
    assert.match(stdout, /--allow-private /);
  });

  describe('against the embedded broker', () => {
    let broker: EmbeddedBroker;
    before(async () => {
      broker = await startEmbeddedBroker();
    });
    after(() => broker.close());

    /** The agent's config file, kept in its data folder (the agent reads only its subfolders). */
    function configFile(dataDir: string, probeId: string): string {
      const path = join(dataDir, 'config.json');
      writeFileSync(
        path,
        JSON.stringify({
          broker: broker.url,
          id: probeId,
          data: dataDir,
          mqtt_version: 4,
          reconnect_min_ms: 50,
          reconnect_max_ms: 400,
          max_concurrent: 5,
          max_one_offs: 500,
          target_burst: 1000,
          target_refill_ms: 1,
          cmd_burst: 1000,
        }),
      );
      return path;
    }

    test('SIGKILL mid-run and restart: every accepted request gets its result, nothing is lost', async (t) => {
      const dataDir = tempDataDir();
      const config = configFile(dataDir, 'killed');
      t.after(() => rmSync(dataDir, { recursive: true, force: true }));
      const controller = await TestController.connect(broker.url, 'killed');
      t.after(() => controller.close());
      const fakeDriver = { SMTP_PROBE_FAKE_MEASURE_MS: '20' };

      const first = runAgent(['--config', config], fakeDriver);
      t.after(() => first.child.kill('SIGKILL'));
      await controller.waitOnline();
      const reqIds = Array.from({ length: 200 }, (_, i) => `k${i}`);
      await Promise.all(reqIds.map((reqId) => controller.send(reqId, REQUEST)));
      await waitFor(() => (reqIds.every((reqId) => controller.acks.get(reqId)?.[0]?.accepted) ? true : undefined), '200 accepted acks', 90_000 * slowdown());
      await waitFor(() => (controller.uniqueResults().size >= 40 ? true : undefined), 'some results before the kill', 30_000 * slowdown());
      const seenBeforeKill = controller.statuses.length;
      first.child.kill('SIGKILL');
      assert.equal((await first.exited).signal, 'SIGKILL');
      const will = await waitFor(() => controller.statuses.slice(seenBeforeKill).find((status) => !status.online), 'the last will');
      assert.equal(will.probe_id, 'killed');
      const before = new Set([...controller.uniqueResults().values()].map((result) => result.req_id));
      assert.ok(before.size < reqIds.length, 'killed before the end');

      const second = runAgent(['--config', config], fakeDriver);
      t.after(() => second.child.kill('SIGKILL'));
      await controller.waitOnline(controller.statuses.length);
      await waitFor(() => {
        const done = new Set([...controller.uniqueResults().values()].map((result) => result.req_id));
        return reqIds.every((reqId) => done.has(reqId)) ? true : undefined;
      }, 'a result for every request after the restart', 60_000);
      await waitFor(() => (readdirSync(join(dataDir, 'outbox')).filter((name) => name !== 'state.json').length === 0 ? true : undefined), 'outbox drained');
      await waitFor(() => (readdirSync(join(dataDir, 'requests')).length === 0 ? true : undefined), 'no request left');

      const statusesBeforeStop = controller.statuses.length;
      second.child.kill('SIGTERM');
      assert.equal((await second.exited).code, 0, second.stderr());
      const offline = await waitFor(() => controller.statuses.slice(statusesBeforeStop).find((status) => !status.online), 'offline status at stop');
      assert.deepEqual(offline.outbox, { depth: 0, bytes: 0, dropped: 0 });
      assert.match(second.stderr(), /"event":"agent-started","probe_id":"killed","requests":\d+/);
      assert.match(second.stderr(), /"event":"agent-stopped"/);
    });

    test('SIGTERM while measuring: a one-off interrupted at shutdown runs again after restart', async (t) => {
      const dataDir = tempDataDir();
      const config = configFile(dataDir, 'graceful');
      t.after(() => rmSync(dataDir, { recursive: true, force: true }));
      const controller = await TestController.connect(broker.url, 'graceful');
      t.after(() => controller.close());

      const slow = runAgent(['--config', config, '--shutdown-grace-ms', '100'], { SMTP_PROBE_FAKE_MEASURE_MS: '60000' });
      t.after(() => slow.child.kill('SIGKILL'));
      await controller.waitOnline();
      assert.deepEqual(await controller.request('long', REQUEST), { req_id: 'long', accepted: true });
      await new Promise((resolve) => setTimeout(resolve, 200));
      slow.child.kill('SIGTERM');
      assert.equal((await slow.exited).code, 0, slow.stderr());
      assert.equal(controller.results.length, 0, 'an interrupted measurement publishes nothing');
      assert.deepEqual(readdirSync(join(dataDir, 'requests')), ['long.req.json']);

      const quick = runAgent(['--config', config], { SMTP_PROBE_FAKE_MEASURE_MS: '10' });
      t.after(() => quick.child.kill('SIGKILL'));
      const result = await waitFor(() => controller.results.find((r) => r.req_id === 'long'), 'the result after restart', 30_000 * slowdown());
      assert.equal(result.status, 'ok');
      quick.child.kill('SIGTERM');
      assert.equal((await quick.exited).code, 0);
    });
  });
});
