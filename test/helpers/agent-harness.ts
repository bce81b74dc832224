// For agent tests: an agent in this process with test settings, and a minimal controller that
// speaks the MQTT contract (sends commands, collects acks, results and statuses, acks results).

import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { Agent, type AgentDeps } from '../../firmware/agent/agent';
import { type AgentConfig, loadAgentConfig } from '../../firmware/agent/config';
import type { LogFields } from '../../firmware/agent/log';
import { type Ack, type ProbeStatus, type PublishedResult, topics } from '../../firmware/agent/protocol';
import { isAllowedAddress } from '../../firmware/measure/address';
import { fakeMeasure } from './agent-fake-measure';
import { slowdown } from './node-command';

const POLL_MS = 10;

/** Polls `check` until it returns something other than undefined; stops polling at the deadline. */
export function waitFor<T>(check: () => T | undefined, what: string, ms = 10_000 * slowdown()): Promise<T> {
  const deadline = Date.now() + ms;
  return new Promise<T>((resolve, reject) => {
    const poll = (): void => {
      const value = check();
      if (value !== undefined) resolve(value);
      else if (Date.now() >= deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(poll, POLL_MS);
    };
    poll();
  });
}

export function tempDataDir(): string {
  return mkdtempSync(join(tmpdir(), 'agent-data-'));
}

/**
 * Agent settings for tests: MQTT 3.1.1 (aedes), fast reconnects, a heap budget for a process
 * shared with the broker and the test itself, and the given flags on top.
 */
export function testConfig(brokerUrl: string, probeId: string, dataDir: string, flags: string[] = []): AgentConfig {
  const outcome = loadAgentConfig(
    ['--broker', brokerUrl, '--id', probeId, '--data', dataDir, '--mqtt-version', '4', '--reconnect-min-ms', '50', '--reconnect-max-ms', '400', '--connect-timeout-ms', '2000', '--heap-limit-mb', '1024', ...flags],
    {},
  );
  if (outcome.kind !== 'config') throw new Error(`bad test config: ${outcome.kind === 'error' ? outcome.message : 'help'}`);
  return outcome.config;
}

export interface AgentFixture {
  agent: Agent;
  dataDir: string;
  logs: Array<{ event: string; fields?: LogFields }>;
  /** the result files waiting in the outbox */
  outboxFiles(): string[];
  stop(): Promise<void>;
}

export async function startAgent(config: AgentConfig, deps: Partial<AgentDeps> = {}): Promise<AgentFixture> {
  const logs: AgentFixture['logs'] = [];
  const agent = await Agent.start(config, {
    measure: fakeMeasure(5),
    isAllowedAddress,
    log: (event, fields) => logs.push({ event, ...(fields && { fields }) }),
    ...deps,
  });
  return {
    agent,
    dataDir: config.dataDir,
    logs,
    outboxFiles: () => readdirSync(join(config.dataDir, 'outbox')).filter((name) => name.endsWith('.json') && name !== 'state.json'),
    stop: async () => {
      await agent.stop();
      rmSync(config.dataDir, { recursive: true, force: true });
    },
  };
}

/** The platform side, reduced to what agent tests need. */
export class TestController {
  readonly acks = new Map<string, Ack[]>();
  /** every result message, duplicates included */
  readonly results: PublishedResult[] = [];
  readonly statuses: ProbeStatus[] = [];
  autoAck = true;

  private constructor(
    readonly probeId: string,
    readonly client: MqttClient,
  ) {}

  static async connect(url: string, probeId: string): Promise<TestController> {
    const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 100, connectTimeout: 2000 });
    client.on('error', () => undefined);
    const controller = new TestController(probeId, client);
    client.on('message', (topic, payload) => controller.onMessage(topic, payload));
    await waitFor(() => (client.connected ? true : undefined), 'controller connect');
    await client.subscribeAsync({
      [`fleet/v1/probe/${probeId}/ack/+`]: { qos: 1 },
      [`fleet/v1/probe/${probeId}/result/+`]: { qos: 1 },
      [topics.status(probeId)]: { qos: 1 },
    });
    return controller;
  }

  send(reqId: string, payload: string | Buffer | object): Promise<unknown> {
    const body = typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload);
    return this.client.publishAsync(topics.cmd(this.probeId, reqId), body, { qos: 1 });
  }

  /** Sends a command and waits for its (next) ack. */
  async request(reqId: string, payload: string | Buffer | object): Promise<Ack> {
    const before = this.acks.get(reqId)?.length ?? 0;
    await this.send(reqId, payload);
    return waitFor(() => this.acks.get(reqId)?.[before], `ack of ${reqId}`);
  }

  ackResults(resultIds: string[]): Promise<unknown> {
    return this.client.publishAsync(topics.resultAck(this.probeId), JSON.stringify({ result_ids: resultIds }), { qos: 1 });
  }

  uniqueResults(): Map<string, PublishedResult> {
    return new Map(this.results.map((result) => [result.result_id, result]));
  }

  /** Resolves with the first online status after `seen` statuses: the agent is subscribed. */
  waitOnline(seen = 0): Promise<ProbeStatus> {
    return waitFor(() => this.statuses.slice(seen).find((status) => status.online), `${this.probeId} online`);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }

  private onMessage(topic: string, payload: Buffer): void {
    const kind = topic.split('/')[4];
    const body: unknown = JSON.parse(payload.toString());
    if (kind === 'ack') {
      const ack = body as Ack;
      this.acks.set(ack.req_id, [...(this.acks.get(ack.req_id) ?? []), ack]);
    } else if (kind === 'result') {
      const result = body as PublishedResult;
      this.results.push(result);
      if (this.autoAck) void this.ackResults([result.result_id]).catch(() => undefined);
    } else if (kind === 'status') {
      this.statuses.push(body as ProbeStatus);
    }
  }
}
