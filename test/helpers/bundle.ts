// Builds the firmware bundle once per test process, with the project's own esbuild options,
// into a temporary folder, so tests run exactly what is shipped.

import { build } from 'esbuild';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleOptions } from '../../build.config';

let built: Promise<string> | undefined;

export function buildBundle(): Promise<string> {
  built ??= (async () => {
    const outfile = join(mkdtempSync(join(tmpdir(), 'smtp-probe-bundle-')), 'smtp-probe.js');
    await build({ ...bundleOptions, outfile, metafile: false });
    return outfile;
  })();
  return built;
}
