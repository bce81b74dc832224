// The command line as a person uses it, through the built bundle: usage errors, one target,
// a list of targets, the readable summary.

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { SmtpResult } from '../../firmware/result';
import { type Listening, demoCaFile, startStarttlsPeer, startStrippingProxy } from '../../scripts/demo/peers';
import { buildBundle } from '../helpers/bundle';
import { type ChildOutput, childOutput, slowdown, spawnNode } from '../helpers/node-command';
import { freeLoopbackPorts } from '../helpers/ports';

let bundle: string;

// Functional bound on one command (a measurement with a 5 s deadline, or a list of them),
// scaled for slower runtimes (ARM under emulation); never a performance target.
const RUN_LIMIT_MS = 60_000 * slowdown();

function run(args: string[]): Promise<ChildOutput> {
  return childOutput(spawnNode([bundle, ...args]), RUN_LIMIT_MS);
}

describe('smtp-probe command line (built bundle)', () => {
  let peer: Listening;
  let stripped: Listening;
  let closedPort: number;
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-cli-'));
  const caFile = demoCaFile;

  before(async () => {
    bundle = await buildBundle();
    peer = await startStarttlsPeer();
    stripped = await startStrippingProxy(peer, 'strip');
    [closedPort] = (await freeLoopbackPorts(1)) as [number];
  });

  after(async () => {
    await stripped?.close();
    await peer?.close();
  });

  test('bad usage exits 2 with a message that names the problem', async () => {
    const cases: [string[], RegExp][] = [
      [[], /missing command/],
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['measure'], /missing TARGET/],
      [['measure', '127.0.0.1', '--port', '70000'], /--port must be a whole number from 1 to 65535/],
      [['measure', '127.0.0.1', '--af', '5'], /--af must be 4 or 6/],
      [['measure', '127.0.0.1', '--implicit-tls', '--no-starttls'], /cannot be combined/],
      [['measure', '127.0.0.1', '--bogus'], /Unknown option '--bogus'/],
      [['measure', 'a', 'b'], /one TARGET only/],
      [['measure', 'bad host!'], /bad TARGET/],
      [['measure', '127.0.0.1', '--resolver', 'dns.example'], /--resolver must be an IP address/],
      [['measure', '--targets', join(dir, 'missing.txt')], /cannot read --targets/],
      [['measure', '127.0.0.1', '--helo', 'x\r\nMAIL FROM:<>'], /--helo must be a host name or an address literal/],
      [['measure', '127.0.0.1', '--sni', '[127.0.0.1]'], /--sni must be a host name/],
    ];
    for (const [args, message] of cases) {
      const result = await run(args);
      assert.equal(result.code, 2, `exit status for ${args.join(' ')}`);
      assert.match(result.stderr, message, `message for ${args.join(' ')}`);
      assert.equal(result.stdout, '');
    }
  });

  test('--help lists every measure option', async () => {
    const result = await run(['measure', '--help']);
    assert.equal(result.code, 0);
    for (const option of ['--port', '--af', '--mx', '--implicit-tls', '--no-starttls', '--sni', '--helo', '--timeout', '--resolver', '--allow-private', '--transcript', '--pretty', '--targets', '--concurrency']) {
      assert.ok(result.stdout.includes(option), `help mentions ${option}`);
    }
  });

  test('one target prints one JSON result and exits 0 when ok', async () => {
    const result = await run(['measure', `127.0.0.1:${peer.port}`, '--allow-private', '--ca', caFile, '--sni', 'mx.demo.test', '--transcript']);
    assert.equal(result.code, 0, result.stderr);
    const parsed = JSON.parse(result.stdout) as SmtpResult;
    assert.equal(parsed.type, 'smtp');
    assert.equal(parsed.status, 'ok');
    assert.equal(parsed.dst_port, String(peer.port));
    assert.equal(parsed.tls?.authorized, true);
    assert.ok((parsed.transcript?.length ?? 0) > 5);
    assert.ok(parsed.transcript?.some(([, direction, line]) => direction === 'c' && line === 'STARTTLS'));
  });

  test('a loopback target without --allow-private is refused and exits 1', async () => {
    const result = await run(['measure', '127.0.0.1', '--port', String(peer.port)]);
    assert.equal(result.code, 1);
    assert.equal((JSON.parse(result.stdout) as SmtpResult).status, 'address-not-allowed');
  });

  test('--pretty shows a readable summary with the findings', async () => {
    const result = await run(['measure', '127.0.0.1', '--port', String(stripped.port), '--allow-private', '--pretty']);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /banner\s+220 mx\.demo\.test/);
    assert.match(result.stdout, /findings\s+starttls-not-supported/);
    assert.throws(() => JSON.parse(result.stdout));
  });

  test('--targets streams one JSON line per target, skipping comments, blanks and bad lines', async () => {
    const file = join(dir, 'targets.txt');
    writeFileSync(
      file,
      ['# mail servers to measure', '', `127.0.0.1:${peer.port}`, `  127.0.0.1:${stripped.port}  `, 'not a target!', `[::1]:${closedPort}`, `127.0.0.1:${closedPort}`, ''].join('\n'),
    );
    const result = await run(['measure', '--targets', file, '--concurrency', '2', '--allow-private', '--timeout', '5000']);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split('\n');
    assert.equal(lines.length, 4);
    const byPort = new Map(lines.map((line) => JSON.parse(line) as SmtpResult).map((r) => [`${r.dst_addr}:${r.dst_port}`, r]));
    assert.equal(byPort.get(`127.0.0.1:${peer.port}`)?.status, 'ok');
    assert.deepEqual(byPort.get(`127.0.0.1:${stripped.port}`)?.findings, ['starttls-not-supported']);
    assert.equal(byPort.get(`127.0.0.1:${closedPort}`)?.status, 'connect-refused');
    assert.equal(byPort.get(`::1:${closedPort}`)?.status, 'connect-refused');
    assert.match(result.stderr, /:5: skipped 'not a target!': bad-host/);
  });
});
