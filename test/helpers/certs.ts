// Test certificates, made at run time with the openssl command line (Debian `openssl`, which
// .ci/run installs): a private CA, a valid leaf for mx.test / 127.0.0.1 / ::1, an expired
// leaf, and a leaf for another name. Made once per process into a temporary folder.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface KeyPair {
  key: string;
  cert: string;
  keyFile: string;
  certFile: string;
}

export interface TestCerts {
  dir: string;
  ca: KeyPair;
  /** mx.test, localhost, 127.0.0.1, ::1; valid now */
  valid: KeyPair;
  /** mx.test, valid 2020-01-01 to 2021-01-01 */
  expired: KeyPair;
  /** other.test only */
  wrongName: KeyPair;
}

let made: TestCerts | undefined;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function leaf(dir: string, name: string, san: string, dates: { start?: string; end?: string; days?: number }): KeyPair {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', csr, '-subj', `/CN=${name}`], dir);
  // `openssl ca` is the one 3.0 command that takes explicit start and end dates.
  const args = ['ca', '-batch', '-config', join(dir, 'ca.cnf'), '-in', csr, '-out', certFile, '-extfile', ext, '-notext'];
  if (dates.start) args.push('-startdate', dates.start);
  if (dates.end) args.push('-enddate', dates.end);
  if (dates.days) args.push('-days', String(dates.days));
  openssl(args, dir);
  return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8'), keyFile, certFile };
}

export function testCerts(): TestCerts {
  if (made) return made;
  const dir = mkdtempSync(join(tmpdir(), 'smtp-probe-certs-'));
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(
    join(dir, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = test_ca',
      '[test_ca]',
      `dir = ${dir}`,
      'database = $dir/index.txt',
      'serial = $dir/serial',
      'new_certs_dir = $dir',
      'certificate = $dir/ca.crt',
      'private_key = $dir/ca.key',
      'default_md = sha256',
      'policy = any',
      'unique_subject = no',
      'copy_extensions = none',
      '[any]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '3650', '-subj', '/CN=smtp-probe test CA'], dir);
  const ca: KeyPair = { key: readFileSync(join(dir, 'ca.key'), 'utf8'), cert: readFileSync(join(dir, 'ca.crt'), 'utf8'), keyFile: join(dir, 'ca.key'), certFile: join(dir, 'ca.crt') };
  made = {
    dir,
    ca,
    valid: leaf(dir, 'mx.test', 'DNS:mx.test,DNS:localhost,IP:127.0.0.1,IP:::1', { days: 30 }),
    expired: leaf(dir, 'expired.mx.test', 'DNS:mx.test', { start: '20200101000000Z', end: '20210101000000Z' }),
    wrongName: leaf(dir, 'other.test', 'DNS:other.test', { days: 30 }),
  };
  return made;
}
