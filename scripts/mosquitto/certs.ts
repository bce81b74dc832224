// Certificates for a fleet broker, made with the openssl command line: a private CA, a server
// certificate for the broker's loopback address, and one client certificate per identity
// (CN = probe id, or a controller name from ./acl). For tests and local fleets; a production
// fleet issues client certificates from its own CA at provisioning.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface PemFiles {
  certFile: string;
  keyFile: string;
}

export interface FleetCerts {
  dir: string;
  caFile: string;
  server: PemFiles;
  clients: Record<string, PemFiles>;
}

/** MQTT identities are topic levels: no separators, wildcards or spaces. */
const IDENTITY = /^[A-Za-z0-9_.-]{1,64}$/;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function issue(dir: string, name: string, subject: string, extensions: string): PemFiles {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, extensions);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', csr, '-subj', subject], dir);
  openssl(['x509', '-req', '-in', csr, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '30', '-sha256', '-extfile', ext, '-out', certFile], dir);
  return { certFile, keyFile };
}

/** Writes the CA, a server certificate for `serverAddresses` and client certificates into `dir`. */
export function makeFleetCerts(dir: string, identities: string[], serverAddresses: string[] = ['127.0.0.1']): FleetCerts {
  for (const identity of identities) if (!IDENTITY.test(identity)) throw new Error(`identity must be 1 to 64 of A-Z a-z 0-9 _ . -, got ${JSON.stringify(identity)}`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '30', '-subj', '/CN=smtp-probe fleet test CA'], dir);
  const san = serverAddresses.map((address) => (/^[\d.]+$|:/.test(address) ? `IP:${address}` : `DNS:${address}`)).join(',');
  const server = issue(dir, 'broker', '/CN=broker', `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`);
  const clients: Record<string, PemFiles> = {};
  for (const identity of identities) {
    clients[identity] = issue(dir, `client-${identity}`, `/CN=${identity}`, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n');
  }
  return { dir, caFile: join(dir, 'ca.crt'), server, clients };
}
