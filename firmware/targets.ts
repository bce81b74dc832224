// Target specifications as people write them: `host`, `host:port`, `[v6addr]:port`, or a
// bare IPv6 address (several colons, no brackets, so no port). Used for the command-line
// target and for each line of a targets file.

import { isIP } from 'node:net';
import { isHostName } from './names';

export interface TargetSpec {
  host: string;
  port?: number;
}


function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** A target spec, or a stable error code: 'bad-port', 'bad-host'. */
export function parseTarget(spec: string): TargetSpec | { error: 'bad-port' | 'bad-host' } {
  const text = spec.trim();
  let host = text;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1] as string;
    portText = bracketed[2];
    if (isIP(host) !== 6) return { error: 'bad-host' };
  } else if (isIP(text) === 6) {
    host = text;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0) {
      host = text.slice(0, colon);
      portText = text.slice(colon + 1);
    }
  }
  if (isIP(host) === 0 && !isHostName(host)) return { error: 'bad-host' };
  if (portText === undefined) return { host };
  const port = parsePort(portText);
  return port === undefined ? { error: 'bad-port' } : { host, port };
}
