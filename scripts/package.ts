// `npm run package`: the probe's Debian package, dist/smtp-probe_VERSION_all.deb (dpkg-deb).
// Architecture `all`: the firmware is one JavaScript bundle; it depends on Debian's nodejs
// (>= 18), which is what the probes run. Contents:
//
//   /usr/bin/smtp-probe                         launcher: starts the bundle with the V8 memory flags
//   /usr/lib/smtp-probe/smtp-probe.js           the bundle (build.config.ts)
//   /etc/smtp-probe/config.json                 default agent config (a conffile): the data folder and
//                                               the limits derived from the memory budget
//   /lib/systemd/system/smtp-probe.service      systemd unit: the agent, restarted on failure
//   /usr/share/smtp-probe/openwrt/smtp-probe.init   the same for OpenWrt's procd (not run on Debian)
//   /usr/share/doc/smtp-probe/copyright
//
// The memory flags and the limits come from scripts/package/budget.ts, fed by the figures in
// footprint.json (`npm run footprint`).
//
// usage: npx tsx scripts/package.ts [--out DIR]

import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';
import { bundleOptions } from '../build.config';
import { type AgentBudget, deriveBudget, readMeasuredCosts } from './package/budget';

const ROOT = join(__dirname, '..');
const SOURCES = join(__dirname, 'package');
const PACKAGE_NAME = 'smtp-probe';
/** Debian probes keep the outbox here (systemd StateDirectory=smtp-probe). */
const DATA_DIR = '/var/lib/smtp-probe';
const CONFIG_FILE = '/etc/smtp-probe/config.json';

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

function template(name: string, values: Record<string, string>): string {
  let text = readFileSync(join(SOURCES, name), 'utf8');
  for (const [key, value] of Object.entries(values)) text = text.split(`@${key}@`).join(value);
  const left = /@[A-Z_]+@/.exec(text);
  if (left) throw new Error(`${name}: no value for ${left[0]}`);
  return text;
}

function put(root: string, path: string, contents: string | Buffer, mode: number): void {
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, contents);
  chmodSync(file, mode);
}

function treeBytes(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((sum, entry) => {
    const path = join(dir, entry.name);
    return sum + (entry.isDirectory() ? treeBytes(path) : statSync(path).size);
  }, 0);
}

/** The default agent config: where the outbox lives and the budget's limits. */
function defaultConfig(budget: AgentBudget): Record<string, string | number> {
  return { data: DATA_DIR, ...budget.config };
}

function control(version: string, installedKiB: number): string {
  return [
    `Package: ${PACKAGE_NAME}`,
    `Version: ${version}`,
    'Architecture: all',
    'Maintainer: smtp-probe developers <smtp-probe@localhost>',
    `Installed-Size: ${installedKiB}`,
    'Depends: nodejs (>= 18)',
    'Section: net',
    'Priority: optional',
    'Description: SMTP STARTTLS measurement agent for internet-measurement probes',
    ' smtp-probe measures mail servers from a probe: banner, EHLO, STARTTLS, the TLS',
    ' handshake and certificate, and whether the probe is blocked, and reports Atlas-style',
    ' JSON results. The agent takes measurement requests from a controller over MQTT and',
    ' keeps results in a durable outbox until the controller has stored them.',
    '',
  ].join('\n');
}

/** Builds the package into `outDir`; returns the .deb's path. */
export async function buildPackage(outDir: string = join(ROOT, 'dist')): Promise<string> {
  const version = packageVersion();
  const budget = deriveBudget(readMeasuredCosts());
  const staging = mkdtempSync(join(tmpdir(), 'smtp-probe-deb-'));
  try {
    const bundle = join(staging, 'usr', 'lib', PACKAGE_NAME, 'smtp-probe.js');
    mkdirSync(dirname(bundle), { recursive: true });
    await build({ ...bundleOptions, outfile: bundle, metafile: false });
    chmodSync(bundle, 0o644);
    put(staging, 'usr/bin/smtp-probe', template('smtp-probe.sh', { NODE_FLAGS: budget.nodeFlags.join(' ') }), 0o755);
    put(staging, CONFIG_FILE, JSON.stringify(defaultConfig(budget), null, 2) + '\n', 0o644);
    put(staging, 'lib/systemd/system/smtp-probe.service', template('smtp-probe.service', { MEMORY_MAX: String(budget.memoryMaxMiB) }), 0o644);
    put(staging, 'usr/share/smtp-probe/openwrt/smtp-probe.init', readFileSync(join(SOURCES, 'smtp-probe.init')), 0o755);
    mkdirSync(join(staging, 'usr', 'share', 'doc', PACKAGE_NAME), { recursive: true });
    copyFileSync(join(SOURCES, 'copyright'), join(staging, 'usr', 'share', 'doc', PACKAGE_NAME, 'copyright'));
    chmodSync(join(staging, 'usr', 'share', 'doc', PACKAGE_NAME, 'copyright'), 0o644);

    const installedKiB = Math.ceil(treeBytes(staging) / 1024);
    put(staging, 'DEBIAN/control', control(version, installedKiB), 0o644);
    put(staging, 'DEBIAN/conffiles', `${CONFIG_FILE}\n`, 0o644);
    // Folders as dpkg expects them, whatever the umask.
    execFileSync('find', [staging, '-type', 'd', '-exec', 'chmod', '0755', '{}', '+']);

    mkdirSync(outDir, { recursive: true });
    const deb = join(outDir, `${PACKAGE_NAME}_${version}_all.deb`);
    execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', staging, deb], { stdio: ['ignore', 'ignore', 'pipe'] });
    return deb;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

if (require.main === module) {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  buildPackage(values.out).then(
    (deb) => {
      console.log(`${relative(ROOT, deb) || deb} (${(statSync(deb).size / 1024).toFixed(1)} KiB)`);
      console.log(execFileSync('dpkg-deb', ['--info', deb], { encoding: 'utf8' }));
      console.log(execFileSync('dpkg-deb', ['--contents', deb], { encoding: 'utf8' }));
    },
    (error: unknown) => {
      console.error(`package: ${error instanceof Error ? error.message : String(error)}`);
      process.exitCode = 1;
    },
  );
}
