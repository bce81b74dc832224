// The built bundle as a probe runs it: `smtp-probe measure` started with the Node that
// test/helpers/node-command.ts names, which under `npm run test:arm` is Debian's Node 18 on
// armhf or arm64 in qemu-user, and natively this machine's Node. It measures a real Postfix
// (STARTTLS, no TLS, implicit TLS, a client rejected with a blocklist text), that Postfix
// behind STARTTLS-stripping and capability-mangling proxies, and scripted peers that refuse
// STARTTLS, present a certificate for another name, or never speak; all on 127.0.0.1.
// One process measures the whole list (--targets), so the emulator starts Node only twice.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Finding, SmtpResult } from '../../firmware/result';
import { type Listening, startStrippingProxy } from '../../scripts/demo/peers';
import { buildBundle } from '../helpers/bundle';
import { testCerts } from '../helpers/certs';
import { type ChildOutput, childOutput, slowdown, spawnNode } from '../helpers/node-command';
import { type ScriptedPeer, closedPort, expect, reply, send, startPeer, starttlsConversation, untilStarttls } from '../helpers/peers';
import { BLOCKLIST_REJECT_TEXT, POSTFIX_HOSTNAME, type PostfixInstance, startPostfix } from '../helpers/postfix';

/** Whole-measurement deadline: a functional bound, scaled for an emulated Node. */
const TIMEOUT_MS = 5_000 * slowdown();
/** The child's own limit: Node's start, then the silent peer's 10 s banner timeout. */
const RUN_LIMIT_MS = 30_000 * slowdown();
const certs = testCerts();

function runBundle(bundle: string, args: string[]): Promise<ChildOutput> {
  return childOutput(spawnNode([bundle, ...args]), RUN_LIMIT_MS);
}

function sentByProbe(result: SmtpResult): string[] {
  return (result.transcript ?? []).filter(([, direction]) => direction === 'c').map(([, , line]) => line.toUpperCase());
}

describe('the built bundle on the device Node', () => {
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-arm-'));
  const caFile = join(dir, 'ca.crt');
  const peers: ScriptedPeer[] = [];
  const proxies: Listening[] = [];
  let postfix: PostfixInstance | null = null;
  let bundle: string;

  before(async () => {
    writeFileSync(caFile, certs.ca.cert);
    bundle = await buildBundle();
    postfix = await startPostfix();
  });

  after(async () => {
    await Promise.all([...proxies, ...peers].map((server) => server.close()));
    await postfix?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function peer(script: Parameters<typeof startPeer>[0]): Promise<number> {
    const started = await startPeer(script);
    peers.push(started);
    return started.port;
  }

  test('measures a list: real Postfix, tampering proxies and misbehaving peers, with the right findings', async (t) => {
    if (!postfix) return t.skip('postfix not available');
    const host = postfix.host;
    const stripped = await startStrippingProxy({ host, port: postfix.ports.starttls }, 'strip');
    const mangled = await startStrippingProxy({ host, port: postfix.ports.starttls }, 'mangle');
    proxies.push(stripped, mangled);
    const targets: Record<string, number> = {
      postfixStarttls: postfix.ports.starttls,
      postfixPlain: postfix.ports.plain,
      postfixReject: postfix.ports.rejectAtConnect,
      stripped: stripped.port,
      mangled: mangled.port,
      refused: await peer([...untilStarttls(), send('454 4.7.0 TLS not available due to local problem\r\n'), expect(/^QUIT$/i), send(reply(221, ['bye']))]),
      wrongName: await peer(starttlsConversation(certs.wrongName)),
      silent: await peer([]),
      closed: await closedPort(),
    };
    const file = join(dir, 'targets.txt');
    writeFileSync(file, Object.values(targets).map((port) => `${host}:${port}`).join('\n') + '\n');

    const run = await runBundle(bundle, ['measure', '--targets', file, '--concurrency', '10', '--allow-private', '--ca', caFile, '--sni', POSTFIX_HOSTNAME, '--timeout', String(TIMEOUT_MS), '--transcript']);
    const why = `exit ${run.code}\n${run.stderr}\n${run.stdout}\n--- postfix log ---\n${postfix.logTail()}`;
    assert.equal(run.code, 0, why);
    const results = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as SmtpResult);
    assert.equal(results.length, Object.keys(targets).length, why);
    const byName = new Map(Object.entries(targets).map(([name, port]) => [name, results.find((result) => result.dst_port === String(port))]));
    const get = (name: string): SmtpResult => {
      const result = byName.get(name);
      assert.ok(result, `no result for ${name}\n${why}`);
      return result;
    };
    const has = (name: string, finding: Finding): void => assert.ok(get(name).findings.includes(finding), `${name}: ${finding}\n${JSON.stringify(get(name), null, 2)}`);

    const good = get('postfixStarttls');
    assert.equal(good.status, 'ok', JSON.stringify(good, null, 2));
    assert.equal(good.tls?.authorized, true, JSON.stringify(good, null, 2));
    assert.ok(good.tls?.ver === '1.2' || good.tls?.ver === '1.3', JSON.stringify(good, null, 2));
    assert.equal(good.ehlo_tls?.code, 250);
    assert.equal(good.quit?.code, 221);
    assert.deepEqual(good.findings, []);

    has('postfixPlain', 'starttls-not-supported');
    assert.equal(get('postfixReject').status, 'rejected');
    assert.ok(get('postfixReject').banner?.lines.some((line) => line.includes(BLOCKLIST_REJECT_TEXT)));
    has('postfixReject', 'client-blocklisted');
    has('stripped', 'starttls-not-supported');
    has('mangled', 'starttls-capability-mangled');
    has('refused', 'starttls-refused');
    has('wrongName', 'certificate-host-mismatch');
    assert.equal(get('silent').status, 'io-timeout');
    assert.equal(get('silent').phase, 'banner');
    assert.equal(get('closed').status, 'connect-refused');

    // The probe never sends mail: no MAIL, RCPT or DATA, whatever the peer did.
    for (const result of results) assert.ok(!sentByProbe(result).some((line) => /^(MAIL|RCPT|DATA)\b/.test(line)), JSON.stringify(result.transcript));
    for (const scripted of peers) assert.ok(!scripted.clientLines().some((line) => /^(MAIL|RCPT|DATA)\b/i.test(line.text)));
  });

  test('measures Postfix over implicit TLS', async (t) => {
    if (!postfix) return t.skip('postfix not available');
    const run = await runBundle(bundle, ['measure', `${postfix.host}:${postfix.ports.implicitTls}`, '--implicit-tls', '--allow-private', '--ca', caFile, '--sni', POSTFIX_HOSTNAME, '--timeout', String(TIMEOUT_MS)]);
    assert.equal(run.code, 0, `${run.stderr}\n${run.stdout}`);
    const result = JSON.parse(run.stdout) as SmtpResult;
    assert.equal(result.status, 'ok');
    assert.equal(result.mode, 'implicit-tls');
    assert.equal(result.tls?.authorized, true);
    assert.equal(result.banner?.code, 220);
  });
});
