// Integration tests use real parts (Postfix, Mosquitto, dnsmasq, QEMU). Where one is missing
// they skip with a message nobody can miss; with CI=true they fail instead, because .ci/run
// installs every part, so a missing one there is a broken setup, never a reason to skip.

/** Reports that `part` cannot run for `reason`: throws in CI, else prints a banner and returns the reason. */
export function realPartMissing(part: string, reason: string): string {
  if (process.env.CI === 'true') throw new Error(`${part} is required in CI and cannot run: ${reason}`);
  const rule = '!'.repeat(78);
  process.stderr.write(`\n${rule}\n!!! SKIPPED: ${part} tests. ${reason}\n${rule}\n\n`);
  return reason;
}
