// An ARM sysroot with Debian bookworm's Node.js 18, for running the firmware under qemu-user
// on an x86-64 host: `qemu-arm-static -L SYSROOT SYSROOT/usr/bin/node FILE.js`.
//
// The packages are fetched with `apt-get download` (after `dpkg --add-architecture`, which only
// lets apt see the ARM package lists; nothing is installed on the host, and no binfmt handler
// is registered) and unpacked with `dpkg -x` into .cache/arm/<arch>/ (git-ignored). The
// libraries in lib/<triplet>/ and usr/lib/<triplet>/ are linked into lib/ and usr/lib/ too, so
// that the ARM loader, whose paths qemu prefixes with SYSROOT, finds them without the ARM
// ld.so.cache. Debian builds Node against system libraries and takes some of its builtins
// (acorn, cjs-module-lexer, undici) from /usr/share/nodejs, so those packages come along.
//
// Idempotent: a finished sysroot holds a marker naming its package set, and is reused as long as
// the set is the same; downloaded .deb files are kept in .cache/arm/debs/ and reused too.
//
// Run alone: `npx tsx scripts/arm/sysroot.ts [armhf] [arm64]` prints each sysroot's folder.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARM_TARGETS, type ArmArch, type ArmTarget, DEVICE_NODE_MAJOR, parseArches } from './arch';

const REPO_ROOT = join(__dirname, '..', '..');
export const ARM_CACHE = join(REPO_ROOT, '.cache', 'arm');
const DEB_CACHE = join(ARM_CACHE, 'debs');
const MARKER = '.sysroot-ready';

/** Built for the target architecture: Node, libnode and the shared libraries it links. */
const ARCH_PACKAGES = ['nodejs', 'libnode108', 'libc6', 'libgcc-s1', 'libstdc++6', 'libuv1', 'libssl3', 'libbrotli1', 'libc-ares2', 'libnghttp2-14', 'zlib1g', 'libicu72'];
/** Architecture `all`: Debian's externalised Node builtins and what they depend on. */
const ALL_PACKAGES = ['node-cjs-module-lexer', 'node-acorn', 'node-xtend', 'node-undici', 'node-busboy'];
const PROBE_TIMEOUT_MS = 120_000;
const APT_LOCK_TIMEOUT_S = '300';

interface Marker {
  packages: string[];
  version: string;
  arch: string;
}

function run(file: string, args: string[], cwd?: string): string {
  try {
    return execFileSync(file, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024, timeout: 600_000 });
  } catch (error) {
    const failure = error as Error & { stderr?: string };
    throw new Error(`${file} ${args.join(' ')} failed: ${failure.message}\n${failure.stderr ?? ''}`.trim());
  }
}

function packageSet(target: ArmTarget): string[] {
  return [...ARCH_PACKAGES.map((name) => `${name}:${target.arch}`), ...ALL_PACKAGES];
}

/** Lets apt see the target's package lists: a foreign architecture and fresh lists. */
function ensureAptKnows(target: ArmTarget): void {
  const foreign = run('dpkg', ['--print-foreign-architectures']).split('\n');
  let update = false;
  if (!foreign.includes(target.arch)) {
    run('dpkg', ['--add-architecture', target.arch]);
    update = true;
  }
  if (!update) {
    try {
      run('apt-cache', ['show', `nodejs:${target.arch}`]);
    } catch {
      update = true;
    }
  }
  if (update) run('apt-get', ['-o', `DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT_S}`, 'update']);
}

/**
 * The direct dependencies of nodejs and libnode108 must all be in the package set: a new
 * Debian point release that adds one fails here, by name, rather than as a loader error.
 */
function checkDependencies(target: ArmTarget): void {
  const output = run('apt-cache', ['depends', '--important', `nodejs:${target.arch}`, `libnode108:${target.arch}`]);
  const wanted = new Set([...ARCH_PACKAGES, ...ALL_PACKAGES]);
  const missing = output
    .split('\n')
    .map((line) => /^\s+(?:\|)?(?:Pre)?Depends: <?([^:>\s]+)/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined && !wanted.has(name));
  if (missing.length > 0) throw new Error(`nodejs:${target.arch} now depends on packages the sysroot lacks: ${[...new Set(missing)].join(', ')} (add them to scripts/arm/sysroot.ts)`);
}

function cachedDeb(name: string, arch: string): string | undefined {
  if (!existsSync(DEB_CACHE)) return undefined;
  const prefix = `${name}_`;
  const suffix = `_${arch}.deb`;
  return readdirSync(DEB_CACHE)
    // Package names never contain '_', so NAME_ starts only NAME's files.
    .filter((file) => file.startsWith(prefix) && file.endsWith(suffix))
    .sort()
    .at(-1);
}

/** The .deb files of the package set, downloading only those not cached yet. */
function fetchDebs(target: ArmTarget): string[] {
  mkdirSync(DEB_CACHE, { recursive: true });
  const wanted = packageSet(target).map((spec) => {
    const [name, arch] = spec.split(':') as [string, string | undefined];
    return { spec, name, arch: arch ?? 'all' };
  });
  const missing = wanted.filter(({ name, arch }) => cachedDeb(name, arch) === undefined).map(({ spec }) => spec);
  if (missing.length > 0) {
    ensureAptKnows(target);
    checkDependencies(target);
    run('apt-get', ['download', ...missing], DEB_CACHE);
  }
  return wanted.map(({ name, arch }) => {
    const file = cachedDeb(name, arch);
    if (file === undefined) throw new Error(`apt-get download did not produce ${name} (${arch})`);
    return join(DEB_CACHE, file);
  });
}

/** Links every entry of DIR/<triplet>/ into DIR/ (relative links, so they stay inside the sysroot). */
function linkTripletLibraries(root: string, target: ArmTarget): void {
  for (const dir of ['lib', join('usr', 'lib')]) {
    const tripletDir = join(root, dir, target.triplet);
    if (!existsSync(tripletDir)) continue;
    for (const name of readdirSync(tripletDir)) {
      const link = join(root, dir, name);
      if (!existsSync(link)) symlinkSync(join(target.triplet, name), link);
    }
  }
}

/** The command line that starts the sysroot's Node under qemu-user. */
export function armNodeCommand(arch: ArmArch, sysroot: string = sysrootDir(arch)): string[] {
  return [ARM_TARGETS[arch].qemu, '-L', sysroot, join(sysroot, 'usr', 'bin', 'node')];
}

export function sysrootDir(arch: ArmArch): string {
  return join(ARM_CACHE, arch);
}

/** Runs `node -p` in the sysroot and checks it is the device's Node on the right architecture. */
function probeNode(arch: ArmArch, sysroot: string): string {
  const [qemu, ...args] = armNodeCommand(arch, sysroot) as [string, ...string[]];
  const output = execFileSync(qemu, [...args, '-p', 'JSON.stringify([process.version, process.arch])'], { encoding: 'utf8', timeout: PROBE_TIMEOUT_MS });
  const [version, nodeArch] = JSON.parse(output) as [string, string];
  const target = ARM_TARGETS[arch];
  if (!version.startsWith(`v${DEVICE_NODE_MAJOR}.`) || nodeArch !== target.nodeArch) {
    throw new Error(`the ${arch} sysroot runs Node ${version} on ${nodeArch}, expected v${DEVICE_NODE_MAJOR}.x on ${target.nodeArch}`);
  }
  return version;
}

function readMarker(sysroot: string): Marker | undefined {
  try {
    return JSON.parse(readFileSync(join(sysroot, MARKER), 'utf8')) as Marker;
  } catch {
    return undefined;
  }
}

/** The sysroot folder for `arch`, prepared (or reused when already prepared with this package set). */
export function prepareSysroot(arch: ArmArch): string {
  const target = ARM_TARGETS[arch];
  const sysroot = sysrootDir(arch);
  const packages = packageSet(target);
  const marker = readMarker(sysroot);
  if (marker && JSON.stringify(marker.packages) === JSON.stringify(packages)) return sysroot;

  const debs = fetchDebs(target);
  // Unpack beside the final folder and rename, so an interrupted run never leaves a sysroot
  // that looks ready.
  const staging = `${sysroot}.staging-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  try {
    for (const deb of debs) run('dpkg', ['-x', deb, staging]);
    linkTripletLibraries(staging, target);
    const version = probeNode(arch, staging);
    rmSync(sysroot, { recursive: true, force: true });
    renameSync(staging, sysroot);
    const ready: Marker = { packages, version, arch: target.nodeArch };
    writeFileSync(join(sysroot, MARKER), JSON.stringify(ready, null, 2) + '\n');
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return sysroot;
}

/** The Node version a prepared sysroot runs (from its marker), without starting it. */
export function sysrootNodeVersion(arch: ArmArch): string | undefined {
  return readMarker(sysrootDir(arch))?.version;
}

if (require.main === module) {
  try {
    for (const arch of parseArches(process.argv.slice(2))) {
      const sysroot = prepareSysroot(arch);
      console.log(`${arch}: ${sysroot} (Node ${sysrootNodeVersion(arch)}); run: ${armNodeCommand(arch).join(' ')} FILE.js`);
    }
  } catch (error) {
    console.error((error as Error).message);
    process.exit(1);
  }
}
