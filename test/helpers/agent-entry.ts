// `smtp-probe agent` as a child process for tests, with the SMTP driver replaced by the fake
// one when SMTP_PROBE_FAKE_MEASURE_MS is set (so tests that kill and restart the agent need no
// mail server). Arguments and environment are the agent's own.

import { runAgentCommand } from '../../firmware/agent/command';
import { fakeMeasure } from './agent-fake-measure';

const fakeDelay = process.env.SMTP_PROBE_FAKE_MEASURE_MS;

runAgentCommand(process.argv.slice(2), fakeDelay !== undefined ? { measure: fakeMeasure(Number(fakeDelay)) } : {}).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${String(error)}\n`);
    process.exitCode = 1;
  },
);
