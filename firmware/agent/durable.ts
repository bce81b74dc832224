// Crash-safe file writes. A file that must survive power loss or SIGKILL is written to a
// temporary name, fsynced, renamed over its final name and then the folder is fsynced, so after
// a crash the final name holds either the old or the new bytes, never a torn mix, and the new
// name itself is on disk (rename(2) alone only orders the change in the page cache).

import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/** Makes the folder's entries (created, renamed, removed files) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to a new file at `path` and fsyncs it; on failure the file is removed. */
export async function writeFileSynced(path: string, data: string | Uint8Array): Promise<void> {
  const handle = await open(path, 'w', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await unlink(path).catch(() => undefined);
    throw error;
  }
  await handle.close();
}

/** Writes `data` to `dir/name` atomically and durably. `tmpName` must be unique per writer. */
export async function writeFileDurable(dir: string, name: string, data: string | Uint8Array, tmpName = `${name}.tmp`): Promise<void> {
  const tmpPath = join(dir, tmpName);
  await writeFileSynced(tmpPath, data);
  await rename(tmpPath, join(dir, name));
  await fsyncDir(dir);
}

/** Removes a file; a file that is already gone counts as removed. */
export async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
