// Free TCP ports on 127.0.0.1 for servers we cannot start on port 0 ourselves (a Postfix
// instance reads its ports from master.cf). All listeners are held open together so the
// ports are distinct, then closed; the caller binds them right after. Another process may
// take one in between, so callers that can detect a failed bind retry with new ports.

import { type AddressInfo, type Server, createServer } from 'node:net';

const LOOPBACK = '127.0.0.1';

function listenOnAnyPort(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => resolve((server.address() as AddressInfo).port));
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** `count` distinct ports on 127.0.0.1 that were free a moment ago. */
export async function freeLoopbackPorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createServer());
  try {
    return await Promise.all(servers.map(listenOnAnyPort));
  } finally {
    await Promise.all(servers.filter((server) => server.listening).map(close));
  }
}
