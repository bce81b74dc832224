// The MQTT link (DESIGN.md, "The MQTT link"). mqtt.js's client class is imported alone, with
// our own stream over node:net or node:tls, so the bundle carries no WebSocket, SOCKS or
// browser timer code. What mqtt.js does not do for us, done here:
// - reconnecting: its fixed reconnectPeriod is off; each attempt is a fresh client after a
//   jittered exponential delay, so no message state from a dead connection is replayed behind
//   our back (the durable outbox decides what is sent again);
// - errors: the handler is attached before the first connect (without one the first refused
//   connection throws);
// - delivery: a publish settles when the broker acknowledges it or the connection is lost;
//   nothing waits in mqtt.js's in-memory store across connections.
// The session is persistent (clean: false, MQTT 5 session expiry) so commands sent while the
// probe was away are delivered when it returns; the last will marks it offline (retained).

import type { IClientOptions, IPublishPacket, MqttClient as MqttClientType } from 'mqtt';
import { connect as netConnect, isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { AgentConfig } from './config';
import type { Log } from './log';

// The package's typings map every subpath to its index, so the class is typed through a
// type-only import of the entry and loaded from its own module.
const MqttClient = (require('mqtt/lib/client') as { default: typeof MqttClientType }).default;

export type LinkOptions = Pick<
  AgentConfig,
  'probeId' | 'broker' | 'tls' | 'mqttVersion' | 'keepaliveS' | 'sessionExpiryS' | 'connectTimeoutMs' | 'reconnectMinMs' | 'reconnectMaxMs'
> & {
  /** MQTT 5: the broker must not send us larger packets (MQTT 5 3.1.2.11.4) */
  maxIncomingPacketBytes: number;
  /** the last will, made at each connect so its timestamp is current */
  will: () => { topic: string; payload: string };
};

export interface LinkHandlers {
  connected(sessionPresent: boolean): void;
  disconnected(): void;
  /**
   * Resolves once the message is handled: true acknowledges it (PUBACK); false leaves it
   * unacknowledged, so the broker delivers it again in the next session.
   */
  message(topic: string, payload: Buffer): Promise<boolean>;
}

/** MQTT 5 receive maximum we announce: QoS 1 messages the broker may have in flight to us. */
const RECEIVE_MAXIMUM = 16;

export class LinkError extends Error {
  constructor(readonly code: 'not-connected' | 'connection-lost' | 'subscribe-refused') {
    super(code);
  }
}

/**
 * Delay before reconnect attempt `attempt` (0 first): exponential from `minMs`, capped at
 * `maxMs`, with "equal jitter" (half fixed, half random) so a fleet that lost its broker at
 * once does not come back at once, and no delay collapses to zero.
 */
export function reconnectDelay(attempt: number, minMs: number, maxMs: number, random: () => number): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 31));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

function errorCode(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' || typeof code === 'number' ? String(code) : 'error';
}

export class MqttLink {
  private client: MqttClientType | undefined;
  private attempt = 0;
  private connectedAt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** rejecters of publishes and subscribes still waiting on the current connection */
  private readonly waiting = new Set<(error: Error) => void>();

  constructor(
    private readonly options: LinkOptions,
    private readonly handlers: LinkHandlers,
    private readonly log: Log,
    private readonly random: () => number = Math.random,
  ) {}

  start(): void {
    this.connectOnce();
  }

  get connected(): boolean {
    return this.client?.connected === true;
  }

  /** QoS 1 publish; resolves on PUBACK, rejects when not connected or the connection is lost. */
  publish(topic: string, payload: string | Buffer, retain = false): Promise<void> {
    return this.onConnection((client, done) => client.publish(topic, payload, { qos: 1, retain }, (error) => done(error)));
  }

  /** QoS 1 subscriptions; rejects when the broker refuses one of them. */
  subscribe(filters: string[]): Promise<void> {
    return this.onConnection((client, done) =>
      client.subscribe(Object.fromEntries(filters.map((filter) => [filter, { qos: 1 as const }])), (error, granted) => {
        if (!error && granted?.some((grant) => grant.qos === 128)) done(new LinkError('subscribe-refused'));
        else done(error ?? undefined);
      }),
    );
  }

  /** Ends the current connection as if it had failed: the will is sent, and a reconnect follows the backoff. */
  drop(): void {
    this.client?.stream.destroy();
  }

  /** Disconnects cleanly (the will is not sent) and stops reconnecting. */
  async close(timeoutMs: number): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    if (!client) return;
    if (!client.connected) {
      client.end(true);
      return;
    }
    await new Promise<void>((resolve) => {
      // end() already marked the client as disconnecting, so a second end(true) would do
      // nothing: a broker that does not answer gets its socket closed under it.
      const timer = setTimeout(() => {
        client.stream.destroy();
        resolve();
      }, timeoutMs);
      client.end(false, { reasonCode: 0 }, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private onConnection(operation: (client: MqttClientType, done: (error?: Error) => void) => void): Promise<void> {
    const client = this.client;
    if (!client?.connected) return Promise.reject(new LinkError('not-connected'));
    return new Promise<void>((resolve, reject) => {
      const fail = (error: Error): void => {
        this.waiting.delete(fail);
        reject(error);
      };
      this.waiting.add(fail);
      operation(client, (error) => {
        this.waiting.delete(fail);
        if (error) reject(error);
        else resolve();
      });
    });
  }

  private openStream(): ReturnType<typeof netConnect> {
    const { host, port, secure } = this.options.broker;
    if (!secure) return netConnect({ host, port });
    return tlsConnect({ host, port, ...(isIP(host) === 0 && { servername: host }), ...this.options.tls, minVersion: 'TLSv1.2' });
  }

  private connectOnce(): void {
    const will = this.options.will();
    const v5 = this.options.mqttVersion === 5;
    const clientOptions: IClientOptions = {
      manualConnect: true,
      reconnectPeriod: 0,
      clientId: this.options.probeId,
      username: this.options.probeId,
      protocolVersion: this.options.mqttVersion,
      clean: false,
      keepalive: this.options.keepaliveS,
      connectTimeout: this.options.connectTimeoutMs,
      resubscribe: false,
      queueQoSZero: false,
      timerVariant: 'native',
      will: { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: true },
      ...(v5 && {
        properties: {
          sessionExpiryInterval: this.options.sessionExpiryS,
          maximumPacketSize: this.options.maxIncomingPacketBytes,
          receiveMaximum: RECEIVE_MAXIMUM,
        },
      }),
    };
    const client = new MqttClient(() => this.openStream(), clientOptions);
    client.on('error', (error) => this.log('mqtt-error', { code: errorCode(error), message: error.message.slice(0, 200) }));
    client.on('connect', (connack) => {
      this.connectedAt = Date.now();
      this.log('mqtt-connected', { session_present: connack.sessionPresent });
      this.handlers.connected(connack.sessionPresent);
    });
    client.on('close', () => this.onClose(client));
    client.handleMessage = (packet: IPublishPacket, done: (error?: Error) => void) => {
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      this.handlers.message(packet.topic, payload).then(
        // mqtt.js skips the PUBACK when the callback gets an error, and goes on with the next packet.
        (acknowledge) => done(acknowledge ? undefined : new Error('left unacknowledged')),
        (error: unknown) => {
          this.log('message-failed', { code: errorCode(error), message: String(error).slice(0, 200) });
          done();
        },
      );
    };
    this.client = client;
    client.connect();
  }

  private onClose(client: MqttClientType): void {
    if (client !== this.client) return;
    this.client = undefined;
    const wasConnected = this.connectedAt > 0;
    // A connection that held as long as the longest delay was healthy: start over from the
    // shortest delay. One that drops at once (a broker refusing us) keeps backing off.
    if (wasConnected && Date.now() - this.connectedAt >= this.options.reconnectMaxMs) this.attempt = 0;
    this.connectedAt = 0;
    for (const fail of [...this.waiting]) fail(new LinkError('connection-lost'));
    client.end(true);
    if (wasConnected) {
      this.log('mqtt-disconnected');
      this.handlers.disconnected();
    }
    if (this.closed) return;
    const delay = reconnectDelay(this.attempt++, this.options.reconnectMinMs, this.options.reconnectMaxMs, this.random);
    this.reconnectTimer = setTimeout(() => this.connectOnce(), delay);
  }
}
