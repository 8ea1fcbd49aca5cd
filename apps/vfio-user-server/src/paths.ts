// Where the server may listen: the same rules for the vfio-user socket and the control socket.
// A path is taken only if nothing is there or a socket nobody listens on (a dead server's) is;
// a regular file, a directory, or a live socket is never replaced.
import { existsSync, lstatSync, statSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { someoneListens } from '@vfu/transport';

/** sun_path holds 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH = 107;

export class PathError extends Error {}

/**
 * Checks that `path` can be listened on, without changing anything. Returns 'stale' when a
 * dead server's socket is there (to be replaced), 'free' when nothing is; throws PathError with
 * the reason otherwise.
 */
export function checkSocketPath(path: string, what: string): 'free' | 'stale' {
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_SOCKET_PATH)
    throw new PathError(
      `${what} ${path}: ${bytes} bytes; a UNIX socket path holds at most ${MAX_SOCKET_PATH}`,
    );
  const dir = dirname(path);
  if (!existsSync(dir)) throw new PathError(`${what} ${path}: directory ${dir} does not exist`);
  if (!statSync(dir).isDirectory())
    throw new PathError(`${what} ${path}: ${dir} is not a directory`);
  if (!lstatSync(path, { throwIfNoEntry: false })) return 'free';
  if (!lstatSync(path).isSocket())
    throw new PathError(`${what} ${path} exists and is not a socket; not replacing it`);
  if (someoneListens(path)) throw new PathError(`${what} ${path} is in use by another server`);
  return 'stale';
}

/** Removes a stale socket found by checkSocketPath. */
export function removeStale(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* gone already */
  }
}
