// SmtpSession: the conversation as a pure state machine, driven with bytes, events and chosen times.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { type Action, DEFAULT_SESSION_LIMITS, type SessionConfig } from '../../firmware/smtp/session';
import {
  type Answer,
  assertClosedOnce,
  bytes,
  converse,
  everyByte,
  inPieces,
  type Peer,
  runSteps,
  type Step,
  whole,
  written,
} from '../helpers/session-harness';

// Distinct per phase, so every arm-timer action shows which phase it is for.
const TIMEOUTS = { banner: 11, command: 22, tls: 33, quit: 44 };
const arm = (phase: keyof typeof TIMEOUTS): Action => ({ type: 'arm-timer', ms: TIMEOUTS[phase] });
const write = (line: string): Action => ({ type: 'write', data: bytes(`${line}\r\n`) });
const CLOSE: Action = { type: 'close' };
const START_TLS: Action = { type: 'start-tls' };

/** Every string anywhere in the value (keys included) is printable ASCII. */
function assertPrintable(value: unknown): void {
  if (typeof value === 'string') assert.match(value, /^[\x20-\x7e]*$/);
  else if (value && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) {
      assertPrintable(key);
      assertPrintable(inner);
    }
  }
}

function run(steps: readonly Step[], config: Partial<SessionConfig> = {}) {
  const result = runSteps(steps, { timeouts: TIMEOUTS, ...config });
  assertClosedOnce(result.session, result.actions);
  return result;
}

const BANNER = '220 mx.test ESMTP\r\n';
const EHLO_STARTTLS = '250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n';
const EHLO_PLAIN = '250-mx.test\r\n250 SIZE 1000\r\n';
const GO_AHEAD = '220 2.0.0 Ready to start TLS\r\n';
const BYE = '221 2.0.0 Bye\r\n';

/** Banner, EHLO with STARTTLS, STARTTLS accepted, TLS up: the session has just sent EHLO again. */
const UP_TO_EHLO_TLS: Step[] = [
  { at: 1010, receive: BANNER },
  { at: 1025, receive: EHLO_STARTTLS },
  { at: 1030.5, receive: GO_AHEAD },
  { at: 1050, tlsUp: true },
];

describe('SmtpSession: the conversation', () => {
  it('banner -> EHLO -> STARTTLS -> TLS -> EHLO -> QUIT, with the actions and times of each step', () => {
    const { session, perCall } = run([...UP_TO_EHLO_TLS, { at: 1060.25, receive: EHLO_PLAIN }, { at: 1061, receive: BYE }], { transcript: true });
    assert.deepEqual(perCall, [
      [arm('banner')],
      [write('EHLO probe.test'), arm('command')],
      [write('STARTTLS'), arm('command')],
      [START_TLS, arm('tls')],
      [write('EHLO probe.test'), arm('command')],
      [write('QUIT'), arm('quit')],
      [CLOSE],
    ]);
    const received = BANNER.length + EHLO_STARTTLS.length + GO_AHEAD.length + EHLO_PLAIN.length + BYE.length;
    assert.deepEqual(session.record, {
      status: 'ok',
      phase: 'quit',
      bare_lf: false,
      bytes_received: received,
      banner: { code: 220, lines: ['mx.test ESMTP'], rt: 10 },
      ehlo: { code: 250, lines: ['mx.test', 'PIPELINING', 'STARTTLS'], rt: 15, capabilities: { PIPELINING: [], STARTTLS: [] } },
      starttls: { code: 220, enhanced: '2.0.0', lines: ['2.0.0 Ready to start TLS'], rt: 5.5 },
      ehlo_tls: { code: 250, lines: ['mx.test', 'SIZE 1000'], rt: 10.25, capabilities: { SIZE: ['1000'] } },
      quit: { code: 221, enhanced: '2.0.0', lines: ['2.0.0 Bye'], rt: 0.75 },
      transcript: [
        [10, 's', '220 mx.test ESMTP'],
        [10, 'c', 'EHLO probe.test'],
        [25, 's', '250-mx.test'],
        [25, 's', '250-PIPELINING'],
        [25, 's', '250 STARTTLS'],
        [25, 'c', 'STARTTLS'],
        [30.5, 's', '220 2.0.0 Ready to start TLS'],
        [50, 'c', 'EHLO probe.test'],
        [60.25, 's', '250-mx.test'],
        [60.25, 's', '250 SIZE 1000'],
        [60.25, 'c', 'QUIT'],
        [61, 's', '221 2.0.0 Bye'],
      ],
    });
  });

  it('keeps no transcript unless asked', () => {
    const { session } = run([...UP_TO_EHLO_TLS, { at: 1060, receive: EHLO_PLAIN }, { at: 1061, receive: BYE }]);
    assert.equal('transcript' in session.record, false);
  });

  it('two replies in one chunk are both read, in order', () => {
    const { session, perCall } = run([{ at: 1010, receive: BANNER + EHLO_PLAIN }, { at: 1011, receive: BYE }], { mode: 'plain' });
    assert.deepEqual(perCall[1], [write('EHLO probe.test'), arm('command'), write('QUIT'), arm('quit')]);
    assert.deepEqual([session.record.banner?.code, session.record.ehlo?.code, session.record.quit?.code], [220, 250, 221]);
  });

  it('implicit TLS: TLS first, banner timed from TLS up, one EHLO and no STARTTLS even when offered', () => {
    const { session, perCall } = run(
      [
        { at: 1002, receive: '220 plaintext is ignored before TLS\r\n' },
        { at: 1040, tlsUp: true },
        { at: 1045, receive: BANNER },
        { at: 1050, receive: EHLO_STARTTLS },
        { at: 1051, receive: BYE },
      ],
      { mode: 'implicit-tls' },
    );
    assert.deepEqual(perCall, [[START_TLS, arm('tls')], [], [arm('banner')], [write('EHLO probe.test'), arm('command')], [write('QUIT'), arm('quit')], [CLOSE]]);
    const { record } = session;
    assert.equal(record.status, 'ok');
    assert.deepEqual(record.banner, { code: 220, lines: ['mx.test ESMTP'], rt: 5 });
    assert.deepEqual(record.ehlo?.capabilities, { PIPELINING: [], STARTTLS: [] });
    assert.equal(record.starttls, undefined);
    assert.equal(record.ehlo_tls, undefined);
    assert.equal(record.bytes_received, BANNER.length + EHLO_STARTTLS.length + BYE.length);
  });

  it('implicit TLS: a failed handshake ends it in phase tls without a word sent', () => {
    const { session, actions } = run([{ at: 1030, tlsFailed: 'ERR_SSL_WRONG_VERSION_NUMBER' }], { mode: 'implicit-tls' });
    assert.deepEqual(written(actions), []);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['tls-failed', 'tls', 'ERR_SSL_WRONG_VERSION_NUMBER']);
  });

  it('plain mode: QUIT after EHLO even when STARTTLS is offered', () => {
    const { session, actions } = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: EHLO_STARTTLS }, { at: 1021, receive: BYE }], { mode: 'plain' });
    assert.deepEqual(written(actions), ['EHLO probe.test', 'QUIT']);
    assert.equal(actions.some((a) => a.type === 'start-tls'), false);
    assert.equal(session.record.status, 'ok');
    assert.equal(session.record.starttls, undefined);
  });

  it('STARTTLS not offered: QUIT after EHLO, status ok', () => {
    const { session, actions } = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: '250-mx.test\r\n250 XXXXXXXA\r\n' }, { at: 1021, receive: BYE }]);
    assert.deepEqual(written(actions), ['EHLO probe.test', 'QUIT']);
    assert.deepEqual([session.record.status, session.record.phase], ['ok', 'quit']);
    assert.deepEqual(session.record.ehlo?.capabilities, { XXXXXXXA: [] });
  });

  it('EHLO refused with 502: falls back to HELO, then QUIT', () => {
    const { session, perCall } = run([
      { at: 1010, receive: BANNER },
      { at: 1012, receive: '502 5.5.1 EHLO not implemented\r\n' },
      { at: 1015, receive: '250 mx.test\r\n' },
      { at: 1016, receive: BYE },
    ]);
    assert.deepEqual(perCall.slice(1), [[write('EHLO probe.test'), arm('command')], [write('HELO probe.test'), arm('command')], [write('QUIT'), arm('quit')], [CLOSE]]);
    const { record } = session;
    assert.deepEqual(record.ehlo, { code: 502, enhanced: '5.5.1', lines: ['5.5.1 EHLO not implemented'], rt: 2, capabilities: {} });
    assert.deepEqual(record.helo, { code: 250, lines: ['mx.test'], rt: 3 });
    assert.deepEqual([record.status, record.phase, record.err], ['ok', 'quit', undefined]);
  });

  it('HELO refused too: rejected in phase helo, QUIT sent', () => {
    const { session, actions } = run([
      { at: 1010, receive: BANNER },
      { at: 1012, receive: '500 unrecognised\r\n' },
      { at: 1015, receive: '550 5.7.1 go away\r\n' },
      { at: 1016, receive: BYE },
    ]);
    assert.deepEqual(written(actions), ['EHLO probe.test', 'HELO probe.test', 'QUIT']);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['rejected', 'helo', 'reply-550']);
  });

  it('EHLO answered 451: rejected in phase ehlo, QUIT sent; 421: closed at once', () => {
    const soft = run([{ at: 1010, receive: BANNER }, { at: 1012, receive: '451 4.3.0 try later\r\n' }, { at: 1013, receive: BYE }]);
    assert.deepEqual(written(soft.actions), ['EHLO probe.test', 'QUIT']);
    assert.deepEqual([soft.session.record.status, soft.session.record.phase, soft.session.record.err], ['rejected', 'ehlo', 'reply-451']);
    assert.equal(soft.session.record.quit?.code, 221);

    const closing = run([{ at: 1010, receive: BANNER }, { at: 1012, receive: '421 4.3.2 shutting down\r\n' }]);
    assert.deepEqual(closing.perCall.at(-1), [CLOSE]);
    assert.deepEqual(written(closing.actions), ['EHLO probe.test']);
    assert.deepEqual([closing.session.record.status, closing.session.record.phase, closing.session.record.err], ['rejected', 'ehlo', 'service-closing']);
  });
});

describe('SmtpSession: refusals and the greeting', () => {
  const REFUSED = '554 5.7.1 mx.test: no SMTP service for you\r\n';

  it('554 greeting: QUIT, reads the reply, then close; rejected in phase banner', () => {
    const { session, perCall } = run([{ at: 1005, receive: REFUSED }, { at: 1007, receive: BYE }]);
    assert.deepEqual(perCall, [[arm('banner')], [write('QUIT'), arm('quit')], [CLOSE]]);
    const { record } = session;
    assert.deepEqual([record.status, record.phase, record.err], ['rejected', 'banner', 'reply-554']);
    assert.deepEqual(record.banner, { code: 554, enhanced: '5.7.1', lines: ['5.7.1 mx.test: no SMTP service for you'], rt: 5 });
    assert.deepEqual(record.quit, { code: 221, enhanced: '2.0.0', lines: ['2.0.0 Bye'], rt: 2 });
  });

  it('554 greeting: the outcome stands when the server then closes, times out or talks nonsense', () => {
    const endings: Step[] = [
      { at: 1007, eof: true },
      { at: 1007, eof: true, cause: 'ECONNRESET' },
      { at: 1007, timer: 'phase' },
      { at: 1007, timer: 'deadline' },
      { at: 1007, receive: 'nonsense\r\n' },
      { at: 1007, receive: 'x'.repeat(600) },
    ];
    for (const ending of endings) {
      const { session, actions } = run([{ at: 1005, receive: REFUSED }, ending]);
      assert.deepEqual(written(actions), ['QUIT']);
      assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['rejected', 'banner', 'reply-554'], JSON.stringify(ending));
    }
  });

  it('421 greeting: close at once, no QUIT (RFC 5321 3.8)', () => {
    const { session, perCall } = run([{ at: 1003, receive: '421 4.3.2 mx.test too busy\r\n' }]);
    assert.deepEqual(perCall, [[arm('banner')], [CLOSE]]);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['rejected', 'banner', 'service-closing']);
    assert.equal(session.record.banner?.code, 421);
  });

  it('a greeting that is a reply but not 220 or a refusal: protocol-error, QUIT sent', () => {
    const { session, actions } = run([{ at: 1003, receive: '250 hello?\r\n' }, { at: 1004, receive: BYE }]);
    assert.deepEqual(written(actions), ['QUIT']);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['protocol-error', 'banner', 'unexpected-reply']);
  });

  it('a greeting that is not SMTP: protocol-error, closed without a word', () => {
    const { session, actions } = run([{ at: 1003, receive: 'SSH-2.0-OpenSSH_9.6\r\n' }]);
    assert.deepEqual(actions, [arm('banner'), CLOSE]);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['protocol-error', 'banner', 'malformed-reply']);
    assert.equal(session.record.banner, undefined);
  });
});

describe('SmtpSession: STARTTLS', () => {
  const toStarttls: Step[] = [
    { at: 1010, receive: BANNER },
    { at: 1020, receive: EHLO_STARTTLS },
  ];

  it('STARTTLS refused with 454 after it was offered: QUIT, status ok, the 454 recorded', () => {
    const { session, perCall } = run([...toStarttls, { at: 1024, receive: '454 4.7.0 TLS not available due to local problem\r\n' }, { at: 1025, receive: BYE }]);
    assert.deepEqual(perCall.slice(3), [[write('QUIT'), arm('quit')], [CLOSE]]);
    const { record } = session;
    assert.deepEqual([record.status, record.phase, record.err], ['ok', 'quit', undefined]);
    assert.deepEqual(record.starttls, { code: 454, enhanced: '4.7.0', lines: ['4.7.0 TLS not available due to local problem'], rt: 4 });
    assert.equal(record.quit?.code, 221);
  });

  it('STARTTLS answered 501: QUIT, status ok; 421: closed, rejected; 250: protocol-error', () => {
    const cases: [string, string[], [string, string, string | undefined]][] = [
      ['501 5.5.4 syntax\r\n', ['EHLO probe.test', 'STARTTLS', 'QUIT'], ['ok', 'quit', undefined]],
      ['421 4.3.2 closing\r\n', ['EHLO probe.test', 'STARTTLS'], ['rejected', 'starttls', 'service-closing']],
      ['250 sure\r\n', ['EHLO probe.test', 'STARTTLS', 'QUIT'], ['protocol-error', 'starttls', 'unexpected-reply']],
    ];
    for (const [reply, commands, outcome] of cases) {
      const { session, actions } = run([...toStarttls, { at: 1024, receive: reply }, { at: 1025, receive: BYE }]);
      assert.deepEqual(written(actions), commands, reply);
      assert.deepEqual([session.record.status, session.record.phase, session.record.err], outcome, reply);
    }
  });

  it('bytes after the STARTTLS 220 in the same chunk are recorded and never read as a reply (RFC 3207 6)', () => {
    const injected = '250-mx.test\r\n250 AUTH PLAIN\r\n\x16\x03\x01\x00';
    const { session, perCall } = run(
      [
        ...toStarttls,
        { at: 1024, receive: GO_AHEAD + injected },
        { at: 1030, tlsUp: true },
        { at: 1040, receive: '250-mx.test\r\n250 SIZE 5\r\n' },
        { at: 1041, receive: BYE },
      ],
      { transcript: true },
    );
    assert.deepEqual(perCall[3], [START_TLS, arm('tls')]);
    const { record } = session;
    assert.equal(record.plaintext_after_starttls, '250-mx.test\\x0d\\x0a250 AUTH PLAIN\\x0d\\x0a\\x16\\x03\\x01\\x00');
    assert.deepEqual(record.ehlo_tls?.capabilities, { SIZE: ['5'] });
    assert.deepEqual(record.ehlo_tls?.lines, ['mx.test', 'SIZE 5']);
    assert.equal(record.status, 'ok');
    assert.ok(record.transcript?.some(([, dir, text]) => dir === 'i' && text === `discarded ${injected.length} plaintext bytes after STARTTLS 220`));
  });

  it('keeps a bounded prefix of a plaintext flood after the STARTTLS 220', () => {
    const flood = '250 x\r\n'.repeat(300);
    const { session } = run([...toStarttls, { at: 1024, receive: GO_AHEAD + flood }, { at: 1030, tlsFailed: 'ECONNRESET' }]);
    assert.equal(session.record.plaintext_after_starttls, bytes(flood).subarray(0, DEFAULT_SESSION_LIMITS.maxPlaintextAfterStarttls).toString('latin1').replace(/\r\n/g, '\\x0d\\x0a'));
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['tls-failed', 'tls', 'ECONNRESET']);
  });

  it('plaintext delivered while TLS is being set up is not read', () => {
    const { session, perCall } = run([...toStarttls, { at: 1024, receive: GO_AHEAD }, { at: 1025, receive: '250 fake\r\n' }, { at: 1030, tlsUp: true }, { at: 1031, receive: EHLO_PLAIN }, { at: 1032, receive: BYE }]);
    assert.deepEqual(perCall[4], []);
    assert.deepEqual(session.record.ehlo_tls?.lines, ['mx.test', 'SIZE 1000']);
    assert.equal(session.record.plaintext_after_starttls, undefined);
  });

  it('STARTTLS still offered after TLS: the second EHLO records it and the session ends normally', () => {
    const { session, actions } = run([...UP_TO_EHLO_TLS, { at: 1060, receive: EHLO_STARTTLS }, { at: 1061, receive: BYE }]);
    assert.deepEqual(written(actions), ['EHLO probe.test', 'STARTTLS', 'EHLO probe.test', 'QUIT']);
    assert.deepEqual(session.record.ehlo_tls?.capabilities, { PIPELINING: [], STARTTLS: [] });
    assert.equal(session.record.status, 'ok');
  });

  it('EHLO after TLS refused: rejected in phase ehlo_tls', () => {
    const { session, actions } = run([...UP_TO_EHLO_TLS, { at: 1060, receive: '550 5.7.1 not you\r\n' }, { at: 1061, receive: BYE }]);
    assert.deepEqual(written(actions).at(-1), 'QUIT');
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['rejected', 'ehlo_tls', 'reply-550']);
    assert.deepEqual(session.record.ehlo_tls?.capabilities, {});
  });
});

describe('SmtpSession: timers', () => {
  // Steps that bring the session into each phase, and the phase it is then in.
  const into: [string, Step[], Partial<SessionConfig>][] = [
    ['banner', [], {}],
    ['ehlo', [{ at: 1010, receive: BANNER }], {}],
    ['helo', [{ at: 1010, receive: BANNER }, { at: 1011, receive: '502 no\r\n' }], {}],
    ['starttls', [{ at: 1010, receive: BANNER }, { at: 1020, receive: EHLO_STARTTLS }], {}],
    ['tls', [{ at: 1010, receive: BANNER }, { at: 1020, receive: EHLO_STARTTLS }, { at: 1021, receive: GO_AHEAD }], {}],
    ['ehlo_tls', UP_TO_EHLO_TLS, {}],
    ['tls', [], { mode: 'implicit-tls' }],
  ];

  for (const [phase, steps, config] of into) {
    it(`in phase ${phase}${config.mode ? ` (${config.mode})` : ''}: the phase timer, the deadline and an abort give io-timeout naming the phase`, () => {
      for (const [which, err] of [
        ['phase', `${phase}-timeout`],
        ['deadline', 'deadline'],
        ['aborted', 'aborted'],
      ] as const) {
        const { session, perCall } = run([...steps, { at: 5000, timer: which }], config);
        assert.deepEqual(perCall.at(-1), [CLOSE], 'no QUIT on a stalled stream');
        assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['io-timeout', phase, err]);
      }
    });
  }

  it('waiting for the QUIT reply: a timer just closes, the outcome stands', () => {
    for (const which of ['phase', 'deadline'] as const) {
      const { session, perCall } = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: EHLO_PLAIN }, { at: 3000, timer: which }]);
      assert.deepEqual(perCall.at(-1), [CLOSE]);
      assert.deepEqual([session.record.status, session.record.phase, session.record.err, session.record.quit], ['ok', 'quit', undefined, undefined]);
    }
  });
});

describe('SmtpSession: end of stream', () => {
  it('EOF after some lines of a multi-line reply is eof-in-reply', () => {
    const { session } = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: '250-mx.test\r\n250-PIPELINING\r\n' }, { at: 1021, eof: true }]);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['closed', 'ehlo', 'eof-in-reply']);
  });

  it('EOF inside a line is eof-in-reply, and the partial line is kept in the transcript', () => {
    const { session } = run([{ at: 1010, receive: '220 mx.te' }, { at: 1011, eof: true }], { transcript: true });
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['closed', 'banner', 'eof-in-reply']);
    assert.ok(session.record.transcript?.some(([, dir, text]) => dir === 'i' && text === 'unparsed: 220 mx.te'));
  });

  it('EOF between replies is eof; a reset names its cause', () => {
    const clean = run([{ at: 1010, receive: BANNER }, { at: 1011, eof: true }]);
    assert.deepEqual([clean.session.record.status, clean.session.record.phase, clean.session.record.err], ['closed', 'ehlo', 'eof']);
    const silent = run([{ at: 1001, eof: true }]);
    assert.deepEqual([silent.session.record.status, silent.session.record.phase, silent.session.record.err], ['closed', 'banner', 'eof']);
    const reset = run([{ at: 1010, receive: '220-mx' }, { at: 1011, eof: true, cause: 'ECONNRESET' }]);
    assert.deepEqual([reset.session.record.status, reset.session.record.phase, reset.session.record.err], ['closed', 'banner', 'ECONNRESET']);
  });

  it('EOF instead of the QUIT reply just closes: the outcome stands', () => {
    const { session } = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: EHLO_PLAIN }, { at: 1021, eof: true }]);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['ok', 'quit', undefined]);
  });
});

describe('SmtpSession: limits and bad replies', () => {
  it('a line over 512 octets: limit-exceeded, line-too-long, closed without QUIT', () => {
    const { session, actions } = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: `250 ${'a'.repeat(600)}\r\n` }]);
    assert.deepEqual(written(actions), ['EHLO probe.test']);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['limit-exceeded', 'ehlo', 'line-too-long']);
  });

  it('an endless line in small pieces ends as soon as 512 bytes are held', () => {
    const session = runSteps([{ at: 1010, receive: BANNER }], { timeouts: TIMEOUTS }).session;
    let pieces = 0;
    while (!session.done && pieces < 1000) {
      session.receive(bytes('A'.repeat(64)), 1020);
      pieces += 1;
    }
    assert.equal(pieces, 8);
    assert.deepEqual([session.record.status, session.record.err, session.record.bytes_received], ['limit-exceeded', 'line-too-long', BANNER.length + 512]);
  });

  it('a 60-line EHLO is fine; one line past the cap is too-many-lines', () => {
    const ehlo = (n: number): string => `${'250-X-CAP\r\n'.repeat(n - 1)}250 STARTTLS\r\n`;
    const fine = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: ehlo(60) }, { at: 1021, receive: '454 no\r\n' }, { at: 1022, receive: BYE }]);
    assert.equal(fine.session.record.ehlo?.lines.length, 60);
    assert.deepEqual(fine.session.record.ehlo?.capabilities, { 'X-CAP': [], STARTTLS: [] });
    const over = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: ehlo(DEFAULT_SESSION_LIMITS.maxLinesPerReply + 1) }]);
    assert.deepEqual([over.session.record.status, over.session.record.phase, over.session.record.err], ['limit-exceeded', 'ehlo', 'too-many-lines']);
  });

  it('mismatched codes in one reply: protocol-error, code-mismatch, closed without QUIT', () => {
    const { session, actions } = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: '250-mx.test\r\n251 STARTTLS\r\n' }], { transcript: true });
    assert.deepEqual(written(actions), ['EHLO probe.test']);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['protocol-error', 'ehlo', 'code-mismatch']);
    assert.ok(session.record.transcript?.some(([, dir, text]) => dir === 's' && text === '251 STARTTLS'));
  });

  it('the byte cap: limit-exceeded, bytes-exceeded, and the replies before the cap are still read', () => {
    const limits = { ...DEFAULT_SESSION_LIMITS, maxBytes: 64 };
    const flood = `${BANNER}${'250-x\r\n'.repeat(8)}`.slice(0, 65);
    const { session, actions } = run([{ at: 1010, receive: flood }], { limits });
    assert.deepEqual(written(actions), ['EHLO probe.test']);
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['limit-exceeded', 'ehlo', 'bytes-exceeded']);
    assert.equal(session.record.banner?.code, 220);
    assert.equal(session.record.bytes_received, 65);
  });

  it('the byte cap gives the same record whether the flood came in one chunk or byte by byte', () => {
    const limits = { ...DEFAULT_SESSION_LIMITS, maxBytes: 64 };
    const flood = bytes(`${BANNER}${'250-x\r\n'.repeat(8)}`.slice(0, 65));
    const one = run([{ at: 1010, receive: flood }], { limits, transcript: true });
    const split = run(
      Array.from(flood, (b) => ({ at: 1010, receive: Buffer.from([b]) })),
      { limits, transcript: true },
    );
    assert.deepEqual(split.session.record, one.session.record);
    assert.deepEqual(split.actions, one.actions);
  });

  it('the byte cap counts bytes before and after TLS together', () => {
    const limits = { ...DEFAULT_SESSION_LIMITS, maxBytes: 120 };
    const { session } = run([...UP_TO_EHLO_TLS, { at: 1060, receive: '250-mx.test\r\n250 SIZE 1000000000\r\n' }], { limits });
    assert.deepEqual([session.record.status, session.record.phase, session.record.err], ['limit-exceeded', 'ehlo_tls', 'bytes-exceeded']);
  });

  it('bare LF replies are read and flagged', () => {
    const { session } = run([{ at: 1010, receive: '220 mx.test\n' }, { at: 1020, receive: '250-mx.test\n250 SIZE 1\n' }, { at: 1021, receive: '221 bye\n' }], { mode: 'plain' });
    assert.deepEqual([session.record.status, session.record.bare_lf], ['ok', true]);
    assert.deepEqual(session.record.ehlo?.capabilities, { SIZE: ['1'] });
  });

  it('CRLF replies leave bare_lf false', () => {
    const { session } = run([{ at: 1010, receive: BANNER }, { at: 1020, receive: EHLO_PLAIN }, { at: 1021, receive: BYE }]);
    assert.equal(session.record.bare_lf, false);
  });

  it('keeps invalid EHLO lines with each EHLO reply', () => {
    const { session } = run([
      { at: 1010, receive: BANNER },
      { at: 1020, receive: '250-mx.test\r\n250-AUTH=LOGIN\r\n250 STARTTLS\r\n' },
      { at: 1021, receive: GO_AHEAD },
      { at: 1030, tlsUp: true },
      { at: 1040, receive: '250-mx.test\r\n250 bad\x00line\r\n' },
      { at: 1041, receive: BYE },
    ]);
    assert.deepEqual(session.record.ehlo?.invalid_lines, ['AUTH=LOGIN']);
    assert.deepEqual(session.record.ehlo_tls?.invalid_lines, ['bad\\x00line']);
  });

  it('server text with NUL, escape sequences and non-ASCII reaches the record only as printable ASCII', () => {
    const { session } = run([{ at: 1010, receive: '554 5.7.1 \x1b[31mno\x00\xff\\\r\n' }, { at: 1011, eof: true }], { transcript: true });
    assert.deepEqual(session.record.banner?.lines, ['5.7.1 \\x1b[31mno\\x00\\xff\\\\']);
    assertPrintable(session.record);
  });

  it('the transcript stops at its bound and says so', () => {
    const limits = { ...DEFAULT_SESSION_LIMITS, maxTranscript: 6 };
    const { session } = run([...UP_TO_EHLO_TLS, { at: 1060, receive: EHLO_PLAIN }, { at: 1061, receive: BYE }], { limits, transcript: true });
    const transcript = session.record.transcript ?? [];
    assert.equal(transcript.length, 6);
    assert.deepEqual(transcript.at(-1), [25, 'i', 'transcript-truncated']);
    assert.equal(session.record.status, 'ok');
  });

  it('a flood of replies cannot grow the transcript past its bound', () => {
    const limits = { ...DEFAULT_SESSION_LIMITS, maxTranscript: 50 };
    const { session } = run([{ at: 1010, receive: `${'220-hi\r\n'.repeat(99)}220 hi\r\n` }, { at: 1011, eof: true }], { limits, transcript: true });
    assert.equal(session.record.transcript?.length, 50);
  });
});

// ---- properties -------------------------------------------------------------------------

const crlf = (lines: readonly string[]): string => lines.map((l) => `${l}\r\n`).join('');
const then = (send: string, end: 'eof' | 'silent'): Answer => ({ send, then: end });

const peerArbitrary: fc.Arbitrary<Peer> = fc.record({
  banner: fc.constantFrom<Answer>(
    BANNER,
    crlf(['220-mx.test ESMTP', '220 second line']),
    '220\r\n',
    '554 5.7.1 no service\r\n',
    '421 4.3.2 busy\r\n',
    '250 odd\r\n',
    'SSH-2.0-x\r\n',
    then('', 'silent'),
    then('', 'eof'),
    then('220-mx.test\r\n220 ha', 'eof'),
  ),
  ehlo: fc.oneof(
    fc.array(fc.constantFrom('PIPELINING', 'SIZE 1000', 'starttls', 'XXXXXXXA', 'AUTH=LOGIN', '8BITMIME', 'DSN', 'bad\x00\xff'), { maxLength: 8 }).map((caps) => {
      const lines = ['mx.test', ...caps];
      return lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}\r\n`).join('');
    }),
    fc.constantFrom<Answer>(
      EHLO_STARTTLS,
      '502 5.5.1 no EHLO\r\n',
      '451 4.3.0 later\r\n',
      '421 4.3.2 bye\r\n',
      '250-mx.test\r\n251 mismatch\r\n',
      `${'250-X\r\n'.repeat(DEFAULT_SESSION_LIMITS.maxLinesPerReply)}250-X\r\n`,
      'a'.repeat(DEFAULT_SESSION_LIMITS.maxLineOctets),
      then('250-mx.test\r\n250-PIPE', 'eof'),
      then('', 'silent'),
    ),
  ),
  helo: fc.constantFrom<Answer>('250 mx.test\r\n', '550 5.7.1 no\r\n', then('', 'eof')),
  starttls: fc.constantFrom<Answer>(GO_AHEAD, '454 4.7.0 TLS not available\r\n', '501 syntax\r\n', '421 bye\r\n', then('', 'silent')),
  tls: fc.constantFrom<Peer['tls']>('up', { failed: 'ERR_SSL_WRONG_VERSION_NUMBER' }),
  ehloTls: fc.constantFrom<Answer>(EHLO_PLAIN, EHLO_STARTTLS, '550 5.7.1 no\r\n', then('', 'silent'), then('250-mx', 'eof')),
  quit: fc.constantFrom<Answer>(BYE, '221\r\n', then('', 'eof'), then('', 'silent'), '221-a\r\n222 b\r\n'),
});

/** The same peer with every CRLF turned into a bare LF. */
function bareLfPeer(peer: Peer): Peer {
  const lf = (a: Answer): Answer => (typeof a === 'string' ? a.replace(/\r\n/g, '\n') : { ...a, send: a.send.replace(/\r\n/g, '\n') });
  return { ...peer, banner: lf(peer.banner), ehlo: lf(peer.ehlo), helo: lf(peer.helo), starttls: lf(peer.starttls), ehloTls: lf(peer.ehloTls), quit: lf(peer.quit) };
}

const conversation = fc.record({
  peer: fc.tuple(peerArbitrary, fc.boolean()).map(([peer, lf]) => (lf ? bareLfPeer(peer) : peer)),
  mode: fc.constantFrom<SessionConfig['mode']>('starttls', 'plain', 'implicit-tls'),
  sizes: fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 6 }),
});

// Any inputs at all, in any order: bytes (SMTP-shaped and random), TLS events, EOF and timers.
const anyStep: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.oneof(fc.constantFrom(BANNER, EHLO_STARTTLS, GO_AHEAD, BYE, '250-', '250 ', '\r\n', '\n', '554 no\r\n', '421 x\r\n', '454 x\r\n').map(bytes), fc.uint8Array({ maxLength: 700 })).map((receive) => ({ at: 1010, receive })) },
  { weight: 1, arbitrary: fc.constant<Step>({ at: 1020, tlsUp: true }) },
  { weight: 1, arbitrary: fc.constant<Step>({ at: 1020, tlsFailed: 'ECONNRESET' }) },
  { weight: 1, arbitrary: fc.constantFrom<Step>({ at: 1030, eof: true }, { at: 1030, timer: 'phase' }) },
);

describe('SmtpSession: properties', () => {
  it('any inputs in any order: never throws, bounded record, and a deadline always ends it with one close', () => {
    const limits = { ...DEFAULT_SESSION_LIMITS, maxBytes: 2000, maxTranscript: 30 };
    fc.assert(
      fc.property(fc.array(anyStep, { maxLength: 25 }), fc.constantFrom<SessionConfig['mode']>('starttls', 'plain', 'implicit-tls'), (steps, mode) => {
        const { session, actions } = runSteps([...steps, { at: 9000, timer: 'deadline' }], { mode, limits, transcript: true });
        assertClosedOnce(session, actions);
        const { record } = session;
        assert.ok((record.transcript?.length ?? 0) <= limits.maxTranscript);
        assert.ok((record.plaintext_after_starttls?.length ?? 0) <= 4 * limits.maxPlaintextAfterStarttls);
        assertPrintable(record);
        assert.ok(!written(actions).some((c) => /^(MAIL|RCPT|DATA)/.test(c)));
      }),
      { numRuns: 400 },
    );
  });

  it('every conversation ends with exactly one close, last, whatever the peer does', () => {
    fc.assert(
      fc.property(conversation, ({ peer, mode }) => {
        const { session, actions } = converse(peer, whole, { mode, transcript: true });
        assertClosedOnce(session, actions);
        assert.ok(!actions.some((a) => a.type === 'write' && /^(MAIL|RCPT|DATA)/i.test(a.data.toString('latin1'))), 'never MAIL, RCPT or DATA');
        // TLS starts at most once: first thing with implicit TLS, never in plain mode, and
        // in STARTTLS mode only right after the STARTTLS command was answered.
        const tlsAt = actions.findIndex((a) => a.type === 'start-tls');
        assert.ok(actions.filter((a) => a.type === 'start-tls').length <= 1);
        if (mode === 'implicit-tls') assert.equal(tlsAt, 0);
        if (mode === 'plain') assert.deepEqual([tlsAt, written(actions).includes('STARTTLS')], [-1, false]);
        if (mode === 'starttls' && tlsAt >= 0) assert.deepEqual(written(actions.slice(0, tlsAt)).at(-1), 'STARTTLS');
      }),
      { numRuns: 400 },
    );
  });

  it('splitting the server output at every byte, or anywhere, gives the same record and actions', () => {
    fc.assert(
      fc.property(conversation, ({ peer, mode, sizes }) => {
        const config = { mode, transcript: true };
        const reference = converse(peer, whole, config);
        for (const split of [everyByte, inPieces(sizes)]) {
          const other = converse(peer, split, config);
          assert.deepEqual(other.session.record, reference.session.record);
          assert.deepEqual(other.actions, reference.actions);
        }
      }),
      { numRuns: 300 },
    );
  });
});
