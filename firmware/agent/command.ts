// `smtp-probe agent`: reads the settings, runs the agent until SIGINT or SIGTERM, then stops it
// cleanly (offline status, results flushed to disk, session closed). Exit codes: 0 after a
// clean stop or --help, 1 when the agent cannot start, 2 for bad usage.

import { isAllowedAddress } from '../measure/address';
import { measure } from '../measure/driver';
import { Agent, type MeasureFn } from './agent';
import { loadAgentConfig } from './config';
import { jsonLinesLog } from './log';

export interface AgentCommandOverrides {
  /** replaces the SMTP driver (tests and benchmarks) */
  measure?: MeasureFn;
}

function nextSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

export async function runAgentCommand(argv: string[], overrides: AgentCommandOverrides = {}): Promise<number> {
  const outcome = loadAgentConfig(argv, process.env);
  if (outcome.kind === 'help') {
    process.stdout.write(outcome.text);
    return 0;
  }
  if (outcome.kind === 'error') {
    process.stderr.write(`smtp-probe agent: ${outcome.message}\nRun 'smtp-probe agent --help' for the settings.\n`);
    return 2;
  }
  const log = jsonLinesLog((line) => process.stderr.write(line));
  let agent: Agent;
  try {
    agent = await Agent.start(outcome.config, { measure: overrides.measure ?? measure, isAllowedAddress, log });
  } catch (error) {
    log('agent-start-failed', { code: String((error as { code?: unknown }).code ?? 'error'), message: String(error).slice(0, 200) });
    return 1;
  }
  const signal = await nextSignal();
  log('agent-stopping', { signal });
  // A second signal means "now": the outbox is on disk, so nothing is lost by not waiting.
  const now = (): void => process.exit(1);
  process.once('SIGINT', now);
  process.once('SIGTERM', now);
  await agent.stop();
  process.off('SIGINT', now);
  process.off('SIGTERM', now);
  return 0;
}
