// esbuild configuration of the firmware bundle: one minified file for Node 18, with a
// shebang, and a size report of the biggest inputs so growth shows up at build time.
// Run with `npm run build` (tsx build.config.ts).

import { build, type BuildOptions, type Plugin } from 'esbuild';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = __dirname;
const empty = join(root, 'scripts', 'build', 'empty.js');

export const bundleFile = join(root, 'dist', 'smtp-probe.js');

// mqtt.js reads its whole package.json for one field, its version; the bundle carries only that.
const mqttVersionOnly: Plugin = {
  name: 'mqtt-version-only',
  setup(plugin) {
    plugin.onResolve({ filter: /package\.json$/ }, (args) => (args.resolveDir.includes(join('node_modules', 'mqtt', 'build')) ? { path: join(args.resolveDir, args.path), namespace: 'mqtt-version' } : undefined));
    plugin.onLoad({ filter: /.*/, namespace: 'mqtt-version' }, (args) => {
      const { version } = JSON.parse(readFileSync(args.path, 'utf8')) as { version: string };
      return { contents: JSON.stringify({ version }), loader: 'json' };
    });
  },
};

// mqtt.js and mqtt-packet log through `debug`, which the bundle replaces by a silent logger
// (scripts/build/debug.js), yet their ~170 log calls still carried about 9 KB of message text.
// Each call becomes a call of Function.prototype (a no-op) annotated as pure, which a minifying
// build drops with its text; an unminified build just calls the no-op, as the silent logger
// did. The replacement starts with a name, so semicolon-free sources still parse as before.
const LOGGING_FILES = /node_modules[\\/](?:mqtt[\\/]build[\\/]lib[\\/].*|mqtt-packet[\\/](?:parser|writeToStream))\.js$/;
const silentLogCalls: Plugin = {
  name: 'silent-log-calls',
  setup(plugin) {
    plugin.onLoad({ filter: LOGGING_FILES }, (args) => ({
      contents: readFileSync(args.path, 'utf8').replace(/\b(?:this\.log|client\.log|debug)\(/g, '/* @__PURE__ */ Function.prototype('),
      loader: 'js',
    }));
  },
};

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
  // timer code that mqtt.js pulls in is replaced by an empty module, the browser copies of
  // Node's streams and string decoder by Node's own, the debug logger by a silent one and
  // lru-cache by the few lines mqtt.js needs of it.
  alias: {
    ws: empty,
    socks: empty,
    'worker-timers': empty,
    'readable-stream': join(root, 'scripts', 'build', 'readable-stream.js'),
    string_decoder: 'node:string_decoder',
    debug: join(root, 'scripts', 'build', 'debug.js'),
    'lru-cache': join(root, 'scripts', 'build', 'lru-cache.js'),
    'process-nextick-args': join(root, 'scripts', 'build', 'process-nextick-args.js'),
  },
  plugins: [mqttVersionOnly, silentLogCalls],
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
