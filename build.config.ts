// esbuild configuration of the firmware bundle: one minified file for Node 18, with a
// shebang, and a size report of the biggest inputs so growth shows up at build time.
// Run with `npm run build` (tsx build.config.ts).

import { build, type BuildOptions } from 'esbuild';
import { chmodSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = __dirname;
const empty = join(root, 'scripts', 'build', 'empty.js');

export const bundleFile = join(root, 'dist', 'smtp-probe.js');

export const bundleOptions: BuildOptions = {
  entryPoints: [join(root, 'firmware', 'cli.ts')],
  outfile: bundleFile,
  bundle: true,
  platform: 'node',
  target: 'node18',
  format: 'cjs',
  minify: true,
  legalComments: 'none',
  banner: { js: '#!/usr/bin/env node' },
  metafile: true,
  logLevel: 'warning',
  // The probe speaks MQTT over node:net and node:tls only: the WebSocket, SOCKS and browser
  // timer code that mqtt.js pulls in is replaced by an empty module.
  alias: { ws: empty, socks: empty, 'worker-timers': empty },
};

async function main(): Promise<void> {
  const result = await build(bundleOptions);
  chmodSync(bundleFile, 0o755);
  const size = statSync(bundleFile).size;
  console.log(`dist/smtp-probe.js  ${(size / 1024).toFixed(1)} KiB`);
  const inputs = Object.entries(result.metafile?.outputs[Object.keys(result.metafile.outputs)[0] ?? '']?.inputs ?? {})
    .map(([file, info]) => ({ file, bytes: info.bytesInOutput }))
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, 12);
  console.log('biggest inputs (bytes in bundle):');
  for (const { file, bytes } of inputs) console.log(`  ${String(bytes).padStart(8)}  ${file}`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
