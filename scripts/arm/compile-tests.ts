// Compiles node:test files to plain JavaScript for a bare Node 18 (no tsx, no TypeScript): one
// self-contained CommonJS file per test file, run later with `node FILE.js`, which runs the
// node:test tests in it in-process.
//
// Three things differ from running the sources with tsx, and are handled here:
// - `__dirname` and `__filename` would be the compiled file's; every module that uses them
//   (build.config.ts, scripts/demo/peers.ts, packages that read their own files) gets its
//   source location instead, so it finds its files as it does under tsx.
// - `require.main === module` would hold in every module of a bundle (they share the output
//   file's `module`), so each command-line script a test imports (scripts/controller.ts,
//   build.config.ts, firmware/cli.ts) would run its main(); `require.main` is made undefined.
// - esbuild's JavaScript API stays external: it is loaded from node_modules at run time and
//   drives the esbuild binary named by ESBUILD_BINARY_PATH, so tests that build the bundle can
//   do so on an emulated ARM Node too (qemu-user runs host binaries natively when the guest
//   executes them).

import { type Plugin, build } from 'esbuild';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join, relative } from 'node:path';

const LOADERS: Record<string, 'ts' | 'js'> = { '.ts': 'ts', '.mts': 'ts', '.cts': 'ts', '.js': 'js', '.mjs': 'js', '.cjs': 'js' };
const DECLARES_DIRNAME = /\b(?:const|let|var|function)\s+__(?:dirname|filename)\b/;
/** A shebang and a 'use strict' directive must stay first, or strict mode is lost. */
const PROLOGUE = /^(?:#![^\n]*\n)?(?:\s*(['"])use strict\1;?)?/;

const sourceLocations: Plugin = {
  name: 'source-locations',
  setup(pluginBuild) {
    pluginBuild.onLoad({ filter: /\.[cm]?[jt]s$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      const loader = LOADERS[extname(args.path)] ?? 'js';
      if (!/\b__(?:dirname|filename)\b/.test(text) || DECLARES_DIRNAME.test(text)) return { contents: text, loader };
      const prelude = `var __dirname = ${JSON.stringify(dirname(args.path))}, __filename = ${JSON.stringify(args.path)};`;
      const prologue = PROLOGUE.exec(text)?.[0] ?? '';
      // On the prologue's line, so line numbers in stack traces stay those of the source.
      return { contents: prologue + prelude + text.slice(prologue.length), loader };
    });
  },
};

/**
 * Compiles each test file (absolute paths under `root`) to `outDir`, keeping its path relative
 * to `root` with a .js extension; returns the compiled files in the same order.
 */
export async function compileTests(root: string, testFiles: readonly string[], outDir: string): Promise<string[]> {
  const outputs = testFiles.map((file) => join(outDir, relative(root, file)).replace(/\.ts$/, '.js'));
  await Promise.all(
    testFiles.map((file, index) =>
      build({
        entryPoints: [file],
        outfile: outputs[index],
        bundle: true,
        platform: 'node',
        target: 'node18',
        format: 'cjs',
        external: ['esbuild'],
        define: { 'require.main': 'undefined' },
        plugins: [sourceLocations],
        logLevel: 'error',
        // node:test reports failures with stack traces; keep them readable.
        sourcemap: 'inline',
        sourcesContent: false,
      }),
    ),
  );
  return outputs;
}
