// The ARM targets the probe firmware runs on, and how each is emulated on an x86-64 host:
// Debian's architecture name (for apt), the GNU triplet (its library folders), the qemu-user
// binary, and what Node reports as process.arch there.

export type ArmArch = 'armhf' | 'arm64';

export interface ArmTarget {
  arch: ArmArch;
  triplet: string;
  qemu: string;
  nodeArch: 'arm' | 'arm64';
}

export const ARM_TARGETS: Readonly<Record<ArmArch, ArmTarget>> = {
  armhf: { arch: 'armhf', triplet: 'arm-linux-gnueabihf', qemu: 'qemu-arm-static', nodeArch: 'arm' },
  arm64: { arch: 'arm64', triplet: 'aarch64-linux-gnu', qemu: 'qemu-aarch64-static', nodeArch: 'arm64' },
};

export const ARM_ARCHES = Object.keys(ARM_TARGETS) as ArmArch[];

/** The Node major version of Debian bookworm, which the probes run. */
export const DEVICE_NODE_MAJOR = 18;

/** Parses command-line arch names; none means all. */
export function parseArches(names: readonly string[]): ArmArch[] {
  if (names.length === 0) return [...ARM_ARCHES];
  return names.map((name) => {
    if (!(name in ARM_TARGETS)) throw new Error(`unknown ARM architecture '${name}' (known: ${ARM_ARCHES.join(', ')})`);
    return name as ArmArch;
  });
}
