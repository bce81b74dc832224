// What bad input gets (issue 2): the real driver `measure()` against scripted peers on
// 127.0.0.1 that misbehave in every way the issue lists. Each case checks the status, the
// phase and the findings, that the measurement ended by its deadline, that the result stays
// small, what the probe said (never MAIL, RCPT or DATA), and that it closed its connection.
// The last two tests check across all cases: no envelope command anywhere, and no timer or
// socket left behind by any measurement.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { performance } from 'node:perf_hooks';
import { measure } from '../../firmware/measure/driver';
import type { DriverTimeouts, MeasureOptions } from '../../firmware/measure/options';
import { DEFAULT_SESSION_LIMITS } from '../../firmware/smtp/session';
import type { Finding, Phase, SmtpResult, Status } from '../../firmware/result';
import { startStrippingProxy } from '../../scripts/demo/peers';
import { testCerts } from '../helpers/certs';
import {
  BANNER,
  type ClientLine,
  STARTTLS_READY,
  type ScriptedPeer,
  type Step,
  answerQuit,
  awaitBytes,
  closedPort,
  end,
  expect,
  flood,
  pause,
  reply,
  reset,
  send,
  sendPaced,
  startBlackHole,
  startPeer,
  startTls,
  starttlsConversation,
  untilStarttls,
} from '../helpers/peers';

const certs = testCerts();
const TIMEOUTS: DriverTimeouts = { resolve: 1000, connect: 1000, banner: 1000, command: 1000, tls: 1000, quit: 500 };
const DEADLINE_MS = 3000;
/** Slack past a deadline for a loaded machine: a functional bound, not a performance target. */
const MARGIN_MS = 1500;
/** A result is bounded whatever the peer sent. */
const MAX_RESULT_CHARS = 64 * 1024;
/** The default cap on bytes read in one measurement. */
const MAX_BYTES = DEFAULT_SESSION_LIMITS.maxBytes;
/** Node reads a socket at most this much at a time: the overshoot allowed past a byte cap. */
const READ_CHUNK = 64 * 1024;
const ENVELOPE = /^(MAIL|RCPT|DATA)\b/i;
/** What a measurement holds while it runs: timers, TCP and TLS sockets. */
const DRIVER_RESOURCES = new Set(['Timeout', 'TCPSocketWrap', 'TLSWrap']);
/** What a client says in a complete STARTTLS conversation. */
const FULL_CONVERSATION = ['EHLO', 'STARTTLS', 'tls EHLO', 'tls QUIT'];

const peers: ScriptedPeer[] = [];
after(async () => {
  await Promise.all(peers.map((peer) => peer.close()));
});

async function peer(script: readonly Step[], options: Parameters<typeof startPeer>[1] = {}): Promise<ScriptedPeer> {
  const started = await startPeer(script, options);
  peers.push(started);
  return started;
}

interface Run {
  result: SmtpResult;
  elapsed: number;
}

/** Measures 127.0.0.1:port with tight timeouts; checks the deadline and the result's size. */
async function probe(port: number, extra: Partial<MeasureOptions> = {}): Promise<Run> {
  const deadline = extra.timeoutMs ?? DEADLINE_MS;
  const started = performance.now();
  const result = await measure({
    target: '127.0.0.1',
    port,
    allowPrivate: true,
    ca: [certs.ca.cert],
    sni: 'mx.test',
    timeoutMs: deadline,
    ...extra,
    timeouts: { ...TIMEOUTS, ...extra.timeouts },
  });
  const elapsed = performance.now() - started;
  assert.ok(elapsed < deadline + MARGIN_MS, `ended after ${elapsed} ms, deadline ${deadline} ms`);
  assert.ok(JSON.stringify(result).length < MAX_RESULT_CHARS, 'result is bounded');
  assert.equal(result.type, 'smtp');
  return { result, elapsed };
}

/** Waits until the peer saw every client leave: the probe closes its socket when it ends. */
async function clientsGone(target: ScriptedPeer): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const gone = await Promise.race([
    Promise.all(target.connections.map((c) => c.closed)).then(() => true),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), 2000))),
  ]);
  clearTimeout(timer);
  assert.ok(gone, 'the probe closed its connection to the peer');
}

/** The commands the client sent, "tls " in front of those sent inside TLS. */
function commands(lines: readonly ClientLine[]): string[] {
  return lines.map((line) => `${line.tls ? 'tls ' : ''}${line.text.split(' ')[0]?.toUpperCase()}`);
}

interface Outcome {
  status: Status;
  phase: Phase;
  err?: string;
  findings: Finding[];
  /** what the client must have said, as `commands` gives it */
  said?: string[];
}

/** Measures the peer and checks the outcome, then what the client said once it has gone. */
async function expectOutcome(target: ScriptedPeer, want: Outcome, extra: Partial<MeasureOptions> = {}): Promise<Run> {
  const run = await probe(target.port, extra);
  const { result } = run;
  assert.deepEqual(
    { status: result.status, phase: result.phase, ...(want.err !== undefined ? { err: result.err } : {}), findings: [...result.findings].sort() },
    { status: want.status, phase: want.phase, ...(want.err !== undefined ? { err: want.err } : {}), findings: [...want.findings].sort() },
  );
  await clientsGone(target);
  assert.deepEqual(
    target.connections.map((c) => c.failure),
    target.connections.map(() => undefined),
    'the peer script ran without failing',
  );
  // A completed measurement followed the server's script to its end.
  if (want.status === 'ok') assert.ok(target.connections.every((c) => c.scriptDone), 'the peer script ran to its end');
  const lines = target.clientLines();
  assert.deepEqual(
    lines.filter((line) => ENVELOPE.test(line.text)),
    [],
  );
  if (want.said) assert.deepEqual(commands(lines), want.said);
  return run;
}

/** What two runs of the same conversation must agree on, whatever the timing. */
function timeless(result: SmtpResult): unknown {
  const withoutRt = (r: { rt: number } | undefined): unknown => (r ? { ...r, rt: undefined } : undefined);
  return {
    status: result.status,
    phase: result.phase,
    err: result.err,
    banner: withoutRt(result.banner),
    ehlo: withoutRt(result.ehlo),
    starttls: withoutRt(result.starttls),
    ehlo_tls: withoutRt(result.ehlo_tls),
    quit: withoutRt(result.quit),
    tls: result.tls ? { ver: result.tls.ver, authorized: result.tls.authorized, cert: result.tls.cert } : undefined,
    bytes_received: result.bytes_received,
    findings: result.findings,
  };
}

describe('timing: tarpits, silence, early endings', () => {
  test('a tarpit sending one byte a second ends at the banner timeout', async () => {
    const target = await peer([sendPaced('220 mx.test ESMTP at one byte a second\r\n', { chunkSize: 1, pauseMs: 1000 })]);
    const { result, elapsed } = await expectOutcome(target, { status: 'io-timeout', phase: 'banner', err: 'banner-timeout', findings: [], said: [] }, { timeouts: { banner: 1500 } });
    assert.equal(result.banner, undefined);
    assert.ok(elapsed >= 1400, `not before the banner timeout (${elapsed} ms)`);
    assert.ok(elapsed < 1500 + MARGIN_MS, `by the banner timeout (${elapsed} ms)`);
  });

  test('a tarpit trickling its EHLO reply ends at the measurement deadline', async () => {
    const ehlo = reply(250, ['mx.test', ...Array.from({ length: 50 }, (_, i) => `X-SLOW-${i}`), 'STARTTLS']);
    const target = await peer([send(BANNER), expect(/^EHLO /), sendPaced(ehlo, { chunkSize: 1, pauseMs: 20 })]);
    const { result, elapsed } = await expectOutcome(
      target,
      { status: 'io-timeout', phase: 'ehlo', err: 'deadline', findings: [], said: ['EHLO'] },
      { timeoutMs: 1500, timeouts: { command: 5000 } },
    );
    assert.equal(result.ehlo, undefined);
    assert.ok(result.bytes_received > BANNER.length && result.bytes_received < BANNER.length + ehlo.length, `bytes_received ${result.bytes_received}`);
    assert.ok(elapsed >= 1400, `not before the deadline (${elapsed} ms)`);
  });

  test('a peer that accepts and never speaks ends at the banner timeout', async () => {
    const target = await peer([]);
    // RFC 5321 3.1: the client waits for the greeting and says nothing first.
    const { result } = await expectOutcome(target, { status: 'io-timeout', phase: 'banner', err: 'banner-timeout', findings: [], said: [] });
    assert.equal(result.bytes_received, 0);
    assert.equal(typeof result.ttc, 'number');
  });

  test('a 554 greeting gets QUIT and its reply is recorded (RFC 5321 3.1)', async () => {
    const target = await peer([send('554 5.7.1 mx.test ESMTP not accepting mail from you\r\n'), ...answerQuit()]);
    const { result } = await expectOutcome(target, { status: 'rejected', phase: 'banner', findings: ['client-rejected'], said: ['QUIT'] });
    assert.equal(result.banner?.code, 554);
    assert.equal(result.banner?.enhanced, '5.7.1');
    assert.equal(result.quit?.code, 221);
    assert.equal(result.ehlo, undefined);
  });

  test('a 554 greeting whose QUIT is never answered stays rejected and ends at the QUIT timeout', async () => {
    const target = await peer([send('554 mx.test no SMTP service here\r\n'), expect(/^QUIT$/)]);
    const { result, elapsed } = await expectOutcome(target, { status: 'rejected', phase: 'banner', findings: ['client-rejected'], said: ['QUIT'] });
    assert.equal(result.quit, undefined);
    assert.ok(elapsed >= TIMEOUTS.quit - 100, `waited for the QUIT reply (${elapsed} ms)`);
  });

  test('a 421 greeting then close ends the session at once, without QUIT (RFC 5321 3.8)', async () => {
    const target = await peer([send('421 mx.test Service not available, closing transmission channel\r\n'), end()]);
    const { result } = await expectOutcome(target, { status: 'rejected', phase: 'banner', err: 'service-closing', findings: [], said: [] });
    assert.equal(result.banner?.code, 421);
  });

  test('EOF in the middle of a reply is closed, not a timeout', async () => {
    const target = await peer([send(BANNER), expect(/^EHLO /), send('250-mx.test\r\n250-PIPELI'), end()]);
    const { result } = await expectOutcome(target, { status: 'closed', phase: 'ehlo', err: 'eof-in-reply', findings: [], said: ['EHLO'] });
    assert.equal(result.banner?.code, 220);
  });

  test('a reset in the middle of a reply is closed, named by its errno', async () => {
    const target = await peer([send(BANNER), expect(/^EHLO /), send('250-mx.test\r\n'), pause(200), reset()]);
    await expectOutcome(target, { status: 'closed', phase: 'ehlo', err: 'ECONNRESET', findings: [], said: ['EHLO'] });
  });

  test('a listener whose accept queue is full gives connect-timeout', async (t) => {
    const hole = await startBlackHole();
    t.after(() => hole.close());
    const { result, elapsed } = await probe(hole.port, { timeouts: { connect: 800 } });
    assert.deepEqual([result.status, result.phase, result.findings], ['connect-timeout', 'connect', []]);
    assert.equal(result.ttc, undefined);
    assert.ok(elapsed >= 700, `not before the connect timeout (${elapsed} ms)`);
  });

  test('a closed port gives connect-refused', async () => {
    const { result } = await probe(await closedPort());
    assert.deepEqual([result.status, result.phase, result.err, result.findings], ['connect-refused', 'connect', 'ECONNREFUSED', []]);
  });
});

describe('framing: how replies arrive', () => {
  test('replies split at every byte give the same result as unsplit', async () => {
    const script = starttlsConversation(certs.valid);
    const whole = await peer(script);
    const split = await peer(script, { pace: { chunkSize: 1, pauseMs: 1 } });
    const { result: wholeResult } = await expectOutcome(whole, { status: 'ok', phase: 'quit', findings: [], said: FULL_CONVERSATION });
    const { result: splitResult } = await expectOutcome(
      split,
      { status: 'ok', phase: 'quit', findings: [], said: FULL_CONVERSATION },
      { timeoutMs: 10_000, timeouts: { banner: 3000, command: 3000, tls: 3000 } },
    );
    assert.deepEqual(timeless(splitResult), timeless(wholeResult));
  });

  test('two replies in one segment: the early QUIT reply is read after QUIT is sent', async () => {
    const target = await peer([send(BANNER), expect(/^EHLO /), send(reply(250, ['mx.test', 'PIPELINING']) + '221 2.0.0 Bye\r\n'), expect(/^QUIT$/), end()]);
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: ['starttls-not-supported'], said: ['EHLO', 'QUIT'] });
    assert.deepEqual(result.ehlo?.capabilities, { PIPELINING: [] });
    assert.equal(result.quit?.code, 221);
  });

  test('final lines without a space ("250" alone) complete their replies', async () => {
    const target = await peer([
      send('220\r\n'),
      expect(/^EHLO /),
      send('250-mx.test\r\n250-STARTTLS\r\n250\r\n'),
      expect(/^STARTTLS$/),
      startTls('220\r\n', certs.valid),
      expect(/^EHLO /),
      send('250\r\n'),
      expect(/^QUIT$/),
      send('221\r\n'),
      end(),
    ]);
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: [], said: FULL_CONVERSATION });
    assert.deepEqual(result.banner?.lines, ['']);
    assert.ok(result.ehlo && 'STARTTLS' in result.ehlo.capabilities);
    assert.deepEqual([result.starttls?.code, result.ehlo_tls?.code, result.quit?.code], [220, 250, 221]);
  });

  test('LF-only lines are read and recorded as bare-lf', async () => {
    const target = await peer([
      send('220 mx.test ESMTP\n'),
      expect(/^EHLO /),
      send(reply(250, ['mx.test', 'STARTTLS'], '\n')),
      expect(/^STARTTLS$/),
      startTls('220 Ready\n', certs.valid),
      expect(/^EHLO /),
      send(reply(250, ['mx.test', 'PIPELINING'], '\n')),
      expect(/^QUIT$/),
      send('221 Bye\n'),
      end(),
    ]);
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: ['bare-lf'], said: FULL_CONVERSATION });
    assert.deepEqual(result.ehlo_tls?.capabilities, { PIPELINING: [] });
  });

  test('a 60-line EHLO reply: every capability is parsed', async () => {
    const capabilities = [...Array.from({ length: 59 }, (_, i) => `X-CAP-${i} p${i}`), 'STARTTLS'];
    const target = await peer(starttlsConversation({ ...certs.valid, ehlo: ['mx.test', ...capabilities] }));
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: [], said: FULL_CONVERSATION });
    assert.equal(result.ehlo?.lines.length, 61);
    const parsed = result.ehlo?.capabilities ?? {};
    assert.equal(Object.keys(parsed).length, 60);
    assert.deepEqual(parsed['X-CAP-42'], ['p42']);
    assert.deepEqual(parsed['STARTTLS'], []);
  });

  test('NUL and non-ASCII bytes are shown escaped in the banner', async () => {
    const target = await peer([send('220 mx.test \x00 caf\xc3\xa9 \xff\x1b[31m \\ end\r\n'), expect(/^EHLO /), send(reply(250, ['mx.test'])), ...answerQuit()]);
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: ['starttls-not-supported'], said: ['EHLO', 'QUIT'] });
    assert.deepEqual(result.banner?.lines, ['mx.test \\x00 caf\\xc3\\xa9 \\xff\\x1b[31m \\\\ end']);
    assert.match(JSON.stringify(result), /^[\x20-\x7e]*$/);
  });

  test('mismatched codes in one multi-line reply are a protocol error', async () => {
    const target = await peer([send(BANNER), expect(/^EHLO /), send('250-mx.test\r\n251-PIPELINING\r\n250 STARTTLS\r\n')]);
    await expectOutcome(target, { status: 'protocol-error', phase: 'ehlo', err: 'code-mismatch', findings: [], said: ['EHLO'] });
  });
});

describe('limits: endless lines and floods', () => {
  test('an endless line stops at the line limit', async () => {
    const target = await peer([flood('A'.repeat(4096), 8 * 1024 * 1024)]);
    const { result } = await expectOutcome(target, { status: 'limit-exceeded', phase: 'banner', err: 'line-too-long', findings: ['reply-limit-exceeded'], said: [] });
    assert.ok(result.bytes_received <= MAX_BYTES + READ_CHUNK, `bytes_received ${result.bytes_received}`);
  });

  test('an endless multi-line reply stops at the lines-per-reply limit', async () => {
    const target = await peer([flood(`220-${'x'.repeat(70)}\r\n`, 8 * 1024 * 1024)]);
    const { result } = await expectOutcome(target, { status: 'limit-exceeded', phase: 'banner', err: 'too-many-lines', findings: ['reply-limit-exceeded'], said: [] });
    assert.ok(result.bytes_received <= MAX_BYTES + READ_CHUNK, `bytes_received ${result.bytes_received}`);
  });

  test('a flood of megabytes stops at the byte limit with bounded memory', async () => {
    const offered = 64 * 1024 * 1024;
    const target = await peer([flood(`220-${'x'.repeat(70)}\r\n`, offered)]);
    const before = process.memoryUsage();
    const { result } = await expectOutcome(
      target,
      { status: 'limit-exceeded', phase: 'banner', err: 'bytes-exceeded', findings: ['reply-limit-exceeded'], said: [] },
      { limits: { maxLinesPerReply: 1_000_000, maxBytes: MAX_BYTES } },
    );
    const afterRun = process.memoryUsage();
    assert.ok(result.bytes_received > MAX_BYTES, `bytes_received ${result.bytes_received}`);
    assert.ok(result.bytes_received <= MAX_BYTES + READ_CHUNK, `bytes_received ${result.bytes_received}`);
    const held = (usage: NodeJS.MemoryUsage): number => usage.heapUsed + usage.external + usage.arrayBuffers;
    const grown = held(afterRun) - held(before);
    assert.ok(grown < 32 * 1024 * 1024, `memory grew by ${grown} bytes while ${offered} were offered`);
  });

  test('an endless line inside TLS stops at the line limit', async () => {
    const target = await peer([...untilStarttls(), startTls(STARTTLS_READY, certs.valid), expect(/^EHLO /), flood('250-' + 'B'.repeat(4096), 8 * 1024 * 1024)]);
    const { result } = await expectOutcome(target, {
      status: 'limit-exceeded',
      phase: 'ehlo_tls',
      err: 'line-too-long',
      findings: ['reply-limit-exceeded'],
      said: ['EHLO', 'STARTTLS', 'tls EHLO'],
    });
    assert.equal(result.tls?.authorized, true);
    assert.ok(result.bytes_received <= MAX_BYTES + READ_CHUNK, `bytes_received ${result.bytes_received}`);
  });
});

describe('STARTTLS and TLS', () => {
  test('a well-behaved STARTTLS server: ok, authorized, no findings', async () => {
    const target = await peer(starttlsConversation(certs.valid));
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: [], said: FULL_CONVERSATION });
    assert.equal(result.tls?.authorized, true);
    assert.equal(result.tls?.hostname, 'mx.test');
    assert.equal(result.quit?.code, 221);
  });

  test('STARTTLS refused with 454 after it was offered', async () => {
    const target = await peer([...untilStarttls(), send('454 4.7.0 TLS not available due to local problem\r\n'), ...answerQuit()]);
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: ['starttls-refused'], said: ['EHLO', 'STARTTLS', 'QUIT'] });
    assert.equal(result.starttls?.code, 454);
    assert.equal(result.tls, undefined);
  });

  const tamperings = [
    {
      name: 'a proxy rewriting STARTTLS to XXXXXXXA: mangled and not supported',
      tampering: 'mangle',
      lines: ['mx.test', 'PIPELINING', 'XXXXXXXA'],
      capabilities: { PIPELINING: [], XXXXXXXA: [] },
      findings: ['starttls-capability-mangled', 'starttls-not-supported'],
    },
    {
      name: 'a proxy removing the STARTTLS line (the last one): not supported',
      tampering: 'strip',
      lines: ['mx.test', 'PIPELINING'],
      capabilities: { PIPELINING: [] },
      findings: ['starttls-not-supported'],
    },
  ] as const;
  for (const tampered of tamperings) {
    test(tampered.name, async (t) => {
      const upstream = await peer([send(BANNER), expect(/^EHLO /), send(reply(250, ['mx.test', 'PIPELINING', 'STARTTLS'])), ...answerQuit()]);
      const proxy = await startStrippingProxy({ host: '127.0.0.1', port: upstream.port }, tampered.tampering);
      t.after(() => proxy.close());
      const { result } = await probe(proxy.port);
      assert.deepEqual([result.status, result.phase], ['ok', 'quit']);
      assert.deepEqual(result.ehlo?.lines, tampered.lines);
      assert.deepEqual(result.ehlo?.capabilities, tampered.capabilities);
      assert.deepEqual([...result.findings].sort(), tampered.findings);
      await clientsGone(upstream);
      assert.deepEqual(commands(upstream.clientLines()), ['EHLO', 'QUIT']);
    });
  }

  test('garbage instead of a TLS handshake after 220', async () => {
    const target = await peer([...untilStarttls(), send(STARTTLS_READY), awaitBytes(), send('this is not TLS, this is plain text\r\n'.repeat(4)), end()]);
    const { result } = await expectOutcome(target, { status: 'tls-failed', phase: 'tls', findings: ['tls-handshake-failed'] });
    assert.equal(typeof result.tls?.err, 'string');
    assert.equal(result.ehlo_tls, undefined);
  });

  test('the server closing during the TLS handshake: tls-failed', async () => {
    const target = await peer([...untilStarttls(), send(STARTTLS_READY), awaitBytes(), end()]);
    await expectOutcome(target, { status: 'tls-failed', phase: 'tls', findings: ['tls-handshake-failed'] });
  });

  test('no cipher in common: the alert from the server is recorded in RFC numbers', async () => {
    // eNULL suites are never in a client's DEFAULT list, so the server finds nothing to pick.
    const target = await peer([...untilStarttls(), startTls(STARTTLS_READY, { ...certs.valid, maxVersion: 'TLSv1.2', ciphers: 'NULL-SHA256:@SECLEVEL=0' })]);
    const { result } = await expectOutcome(target, { status: 'tls-failed', phase: 'tls', findings: ['tls-handshake-failed'], said: ['EHLO', 'STARTTLS'] });
    // RFC 8446 6.2: handshake_failure(40), fatal(2)
    assert.deepEqual(result.tls?.alert, { level: 2, description: 40 });
  });

  test('a 250 reply to STARTTLS is a protocol error, not a refusal', async () => {
    const target = await peer([...untilStarttls(), send('250 2.0.0 OK\r\n'), ...answerQuit()]);
    const { result } = await expectOutcome(target, {
      status: 'protocol-error',
      phase: 'starttls',
      err: 'unexpected-reply',
      // DESIGN.md: starttls-refused is 454/501/5xx after STARTTLS was offered.
      findings: [],
      said: ['EHLO', 'STARTTLS', 'QUIT'],
    });
    assert.equal(result.starttls?.code, 250);
    assert.equal(result.tls, undefined);
  });

  test('STARTTLS 220 and then silence ends at the TLS timeout', async () => {
    const target = await peer([...untilStarttls(), send(STARTTLS_READY)]);
    await expectOutcome(target, { status: 'io-timeout', phase: 'tls', err: 'tls-timeout', findings: [] });
  });

  test('an expired certificate: certificate-expired, the session still completes', async () => {
    const target = await peer(starttlsConversation(certs.expired));
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: ['certificate-expired'], said: FULL_CONVERSATION });
    assert.equal(result.tls?.authorized, false);
    assert.equal(result.tls?.authorization_error, 'CERT_HAS_EXPIRED');
  });

  test('a certificate for another name: certificate-host-mismatch', async () => {
    const target = await peer(starttlsConversation(certs.wrongName));
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: ['certificate-host-mismatch'], said: FULL_CONVERSATION });
    assert.equal(result.tls?.authorized, false);
    assert.deepEqual([result.tls?.hostname, result.tls?.sni], ['mx.test', 'mx.test']);
  });

  test('STARTTLS still offered after TLS: reported, and never sent twice', async () => {
    const target = await peer(starttlsConversation({ ...certs.valid, ehloTls: ['mx.test', 'PIPELINING', 'STARTTLS'] }));
    await expectOutcome(target, { status: 'ok', phase: 'quit', findings: ['starttls-reoffered-after-tls'], said: FULL_CONVERSATION });
  });

  test('plaintext right after the STARTTLS 220 is recorded, never read as the TLS EHLO reply (RFC 3207 6)', async () => {
    const injected = '250-mx.injected\r\n250 AUTH PLAIN\r\n';
    const target = await peer([
      ...untilStarttls(),
      startTls(STARTTLS_READY + injected, certs.valid),
      expect(/^EHLO /),
      send(reply(250, ['mx.test', 'PIPELINING'])),
      ...answerQuit(),
    ]);
    const { result } = await expectOutcome(target, { status: 'ok', phase: 'quit', findings: ['plaintext-after-starttls'], said: FULL_CONVERSATION });
    assert.equal(result.plaintext_after_starttls, '250-mx.injected\\x0d\\x0a250 AUTH PLAIN\\x0d\\x0a');
    assert.deepEqual(result.ehlo_tls?.lines, ['mx.test', 'PIPELINING']);
  });
});

test('the probe sent no MAIL, RCPT or DATA to any peer', () => {
  const lines = peers.flatMap((p) => p.clientLines());
  assert.ok(lines.length > 20, 'the peers recorded the conversations');
  assert.deepEqual(
    lines.filter((line) => ENVELOPE.test(line.text)),
    [],
  );
});

test('no timer or socket of any measurement is left behind', async () => {
  await Promise.all(peers.map((p) => clientsGone(p)));
  await new Promise((resolve) => setTimeout(resolve, 50));
  // process.getActiveResourcesInfo is in Node 18 (since 17.3) but not in @types/node 18.
  const active = (process as NodeJS.Process & { getActiveResourcesInfo(): string[] }).getActiveResourcesInfo();
  assert.deepEqual(
    active.filter((kind) => DRIVER_RESOURCES.has(kind)),
    [],
  );
});
