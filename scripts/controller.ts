// The reference controller's command line, and its module entry for the demo and the tests.
//
//   tsx scripts/controller.ts [--broker URL [--ca F --cert F --key F] | --listen-port N]
//                             [--results FILE] [--target HOST[:PORT]]... [--interval S] ...
//
// Without --broker it runs the embedded broker (aedes, MQTT 3.1.1) on 127.0.0.1. Every probe
// that reports online gets a request for each --target (once); results are stored in --results
// and the per-target table is printed whenever it changed, and once more on exit.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { MeasurementRequest } from '../firmware/agent/protocol';
import { parseTarget } from '../firmware/targets';
import { type EmbeddedBroker, startEmbeddedBroker } from './controller/broker';
import { Controller, ControllerError } from './controller/controller';
import { renderTable } from './controller/table';

export { startEmbeddedBroker, type EmbeddedBroker } from './controller/broker';
export * from './controller/controller';
export * from './controller/store';
export * from './controller/table';

const USAGE = `usage: tsx scripts/controller.ts [options]
  --broker URL          external broker (mqtt:// or mqtts://); default: embedded broker
  --listen-port N       port of the embedded broker on 127.0.0.1 (default 1883)
  --mqtt 4|5            protocol version (default 5; the embedded broker speaks 4 only)
  --group NAME          shared-subscription group (default ctl)
  --client-id ID        client id (default random; Mosquitto with certificates uses the CN)
  --ca F --cert F --key F  PEM files for mqtts with a client certificate
  --results FILE        JSON-lines result store (default results.jsonl)
  --target HOST[:PORT]  measure HOST (default port 25) from every probe; repeatable
  --mode M              starttls (default), implicit-tls or plain
  --interval S          periodic every S seconds (default: one-off)
  --spread S            random delay 0..S seconds per run
  --timeout MS          whole-measurement deadline asked of the probe
  --table-every S       print the table at most every S seconds when it changed (default 5)
  --duration S          exit after S seconds (default: run until SIGINT/SIGTERM)`;

function integer(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a non-negative integer, got ${text}`);
  return value;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      broker: { type: 'string' },
      'listen-port': { type: 'string' },
      mqtt: { type: 'string' },
      group: { type: 'string' },
      'client-id': { type: 'string' },
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      results: { type: 'string', default: 'results.jsonl' },
      target: { type: 'string', multiple: true, default: [] },
      mode: { type: 'string' },
      interval: { type: 'string' },
      spread: { type: 'string' },
      timeout: { type: 'string' },
      'table-every': { type: 'string', default: '5' },
      duration: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const mode = values.mode;
  if (mode !== undefined && mode !== 'starttls' && mode !== 'implicit-tls' && mode !== 'plain') throw new Error(`--mode must be starttls, implicit-tls or plain, got ${mode}`);
  const interval = integer('--interval', values.interval);
  const spread = integer('--spread', values.spread);
  const timeout = integer('--timeout', values.timeout);
  const requests: MeasurementRequest[] = (values.target as string[]).map((text) => {
    const spec = parseTarget(text);
    if ('error' in spec) throw new Error(`--target ${JSON.stringify(text)}: ${spec.error}`);
    const request: MeasurementRequest = { type: 'smtp', target: spec.host, port: spec.port ?? 25 };
    if (mode !== undefined) request.mode = mode;
    if (interval !== undefined) request.interval = interval;
    if (spread !== undefined) request.spread = spread;
    if (timeout !== undefined) request.timeout = timeout;
    return request;
  });

  const embedded = values.broker === undefined;
  const protocolVersion = values.mqtt === undefined ? (embedded ? 4 : 5) : values.mqtt === '4' ? 4 : values.mqtt === '5' ? 5 : undefined;
  if (protocolVersion === undefined) throw new Error(`--mqtt must be 4 or 5, got ${values.mqtt}`);
  if (embedded && protocolVersion === 5) throw new Error('the embedded broker (aedes) speaks MQTT 3.1.1 only: drop --mqtt 5');
  const listenPort = integer('--listen-port', values['listen-port']) ?? 1883;
  const tableEveryMs = (integer('--table-every', values['table-every']) ?? 5) * 1000;
  const duration = integer('--duration', values.duration);

  let broker: EmbeddedBroker | undefined;
  if (embedded) {
    broker = await startEmbeddedBroker({ port: listenPort });
    process.stdout.write(`embedded broker on ${broker.url} (MQTT 3.1.1)\n`);
  }

  const controller = await Controller.start({
    brokerUrl: values.broker ?? (broker as EmbeddedBroker).url,
    resultsFile: values.results as string,
    protocolVersion,
    ...(values.group !== undefined ? { shareGroup: values.group } : {}),
    ...(values['client-id'] !== undefined ? { clientId: values['client-id'] } : {}),
    ...(values.ca !== undefined ? { ca: readFileSync(values.ca) } : {}),
    ...(values.cert !== undefined ? { cert: readFileSync(values.cert) } : {}),
    ...(values.key !== undefined ? { key: readFileSync(values.key) } : {}),
  });
  process.stdout.write(`controller storing results in ${values.results}\n`);
  controller.on('fault', (error) => process.stderr.write(`fault: ${error.message}\n`));
  controller.on('refused', (refusal) => process.stderr.write(`refused result on ${refusal.topic}: ${refusal.reason}\n`));

  const scheduled = new Set<string>();
  controller.on('status', (status) => {
    if (!status.online || scheduled.has(status.probe_id) || requests.length === 0) return;
    scheduled.add(status.probe_id);
    for (const request of requests) {
      controller.request(status.probe_id, request).then(
        (ack) => process.stdout.write(`${status.probe_id} ${request.target}:${request.port}: ${ack.accepted ? 'accepted' : `rejected ${ack.reason} (${ack.message})`}\n`),
        (error: ControllerError) => process.stderr.write(`${status.probe_id} ${request.target}: ${error.code ?? error.message}\n`),
      );
    }
  });

  let changed = false;
  controller.on('stored', () => (changed = true));
  const printer = setInterval(() => {
    if (!changed) return;
    changed = false;
    process.stdout.write('\n' + renderTable(controller.table()));
  }, tableEveryMs);

  const stop = async (): Promise<void> => {
    clearInterval(printer);
    await controller.close();
    await broker?.close();
    process.stdout.write('\n' + renderTable(controller.table()));
    process.stdout.write(`stored ${controller.counters.stored}, duplicates ${controller.counters.duplicates}, refused ${controller.counters.refused}\n`);
  };
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
    if (duration !== undefined) setTimeout(resolve, duration * 1000).unref();
  });
  await stop();
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (error: Error) => {
      process.stderr.write(`${error instanceof ControllerError ? error.code + ': ' : ''}${error.message}\n`);
      process.exit(2);
    },
  );
}
