import { Bytes } from './bytes.js';
import { Command, Defaults, Flag } from './constants.js';
import { einval, type ProtocolError } from './errors.js';
import { frame } from './header.js';
import * as Layout from './layout.js';

/** Negotiated capabilities (§2.3); absent keys take the spec's defaults. */
export interface Capabilities {
  maxMsgFds: number;
  maxDataXferSize: number;
  maxDmaMaps: number;
  pgsizes: number;
  /** Present iff the sender supports migration. */
  migration?: { pgsize: number; maxBitmapSize?: number };
  writeMultiple: boolean;
  twinSocket?: { supported: boolean; fdIndex?: number };
}

export interface Version {
  major: number;
  minor: number;
  caps: Capabilities /** The JSON text as sent (for traces). */;
  json: string;
  keys: string[];
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/**
 * Parses a VERSION payload with every check of §2.4. `expectPgsize` is the server's page size
 * that a client's `migration.pgsize` must equal (null to skip, on the client side).
 */
export function decodeVersion(
  payload: Uint8Array,
  expectPgsize: number | null = Defaults.pgsize,
): Version | ProtocolError {
  const L = Layout.Version;
  if (payload.length < L.SIZE)
    return einval(`VERSION payload of ${payload.length} bytes is shorter than ${L.SIZE}`);
  const b = new Bytes(payload);
  const major = b.get(L.major);
  const minor = b.get(L.minor);
  if (major !== 0) return einval(`VERSION major ${major} is not supported (only 0)`);
  const caps: Capabilities = {
    maxMsgFds: 1,
    maxDataXferSize: Defaults.maxDataXferSize,
    maxDmaMaps: Defaults.maxDmaMaps,
    pgsizes: Defaults.pgsize,
    writeMultiple: false,
  };
  if (payload.length === L.SIZE) return { major, minor, caps, json: '', keys: [] };
  if (payload[payload.length - 1] !== 0) return einval('VERSION JSON is not NUL-terminated');
  const json = new TextDecoder('utf-8', { fatal: false }).decode(
    payload.subarray(L.SIZE, payload.length - 1),
  );
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return einval(`VERSION JSON does not parse: ${json.slice(0, 80)}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    return einval('VERSION JSON is not an object');
  const c = (doc as Record<string, unknown>).capabilities;
  if (c === undefined) return { major, minor, caps, json, keys: [] };
  if (typeof c !== 'object' || c === null || Array.isArray(c))
    return einval('"capabilities" is not an object');
  const o = c as Record<string, unknown>;
  if ('max_msg_fds' in o) {
    if (!isInt(o.max_msg_fds) || o.max_msg_fds < 0 || o.max_msg_fds > 1024)
      return einval('"max_msg_fds" must be an integer from 0 to 1024');
    caps.maxMsgFds = o.max_msg_fds;
  }
  if ('max_data_xfer_size' in o) {
    if (!isInt(o.max_data_xfer_size) || o.max_data_xfer_size <= 0)
      return einval('"max_data_xfer_size" must be a positive integer');
    caps.maxDataXferSize = o.max_data_xfer_size;
  }
  if ('max_dma_maps' in o) {
    if (!isInt(o.max_dma_maps) || o.max_dma_maps < 0)
      return einval('"max_dma_maps" must be a non-negative integer');
    caps.maxDmaMaps = o.max_dma_maps;
  }
  if ('pgsizes' in o) {
    if (!isInt(o.pgsizes) || o.pgsizes <= 0 || o.pgsizes % 4096 !== 0)
      return einval('"pgsizes" must be a multiple of 4096');
    caps.pgsizes = o.pgsizes;
  }
  if ('migration' in o) {
    const m = o.migration;
    if (typeof m !== 'object' || m === null || Array.isArray(m))
      return einval('"migration" is not an object');
    const mm = m as Record<string, unknown>;
    const pgsize = mm.pgsize ?? Defaults.pgsize;
    if (!isInt(pgsize)) return einval('"migration.pgsize" is not an integer');
    if (expectPgsize !== null && pgsize !== expectPgsize)
      return einval(
        `"migration.pgsize" ${pgsize} differs from the server's page size ${expectPgsize}`,
      );
    caps.migration = { pgsize };
    if ('max_bitmap_size' in mm) {
      if (!isInt(mm.max_bitmap_size) || mm.max_bitmap_size <= 0)
        return einval('"migration.max_bitmap_size" must be a positive integer');
      caps.migration.maxBitmapSize = mm.max_bitmap_size;
    }
  }
  if ('write_multiple' in o) {
    if (typeof o.write_multiple !== 'boolean') return einval('"write_multiple" is not a boolean');
    caps.writeMultiple = o.write_multiple;
  }
  if ('twin_socket' in o) {
    const t = o.twin_socket;
    if (typeof t !== 'object' || t === null || Array.isArray(t))
      return einval('"twin_socket" is not an object');
    const tt = t as Record<string, unknown>;
    if ('supported' in tt && typeof tt.supported !== 'boolean')
      return einval('"twin_socket.supported" is not a boolean');
    caps.twinSocket = { supported: tt.supported === true };
    if (isInt(tt.fd_index)) caps.twinSocket.fdIndex = tt.fd_index;
  }
  return { major, minor, caps, json, keys: Object.keys(o) };
}

export function capabilitiesJson(c: Partial<Capabilities>): string {
  const o: Record<string, unknown> = {};
  if (c.maxMsgFds !== undefined) o.max_msg_fds = c.maxMsgFds;
  if (c.maxDataXferSize !== undefined) o.max_data_xfer_size = c.maxDataXferSize;
  if (c.maxDmaMaps !== undefined) o.max_dma_maps = c.maxDmaMaps;
  if (c.pgsizes !== undefined) o.pgsizes = c.pgsizes;
  if (c.migration)
    o.migration = {
      pgsize: c.migration.pgsize,
      ...(c.migration.maxBitmapSize ? { max_bitmap_size: c.migration.maxBitmapSize } : {}),
    };
  if (c.writeMultiple) o.write_multiple = true;
  return JSON.stringify({ capabilities: o });
}

/**
 * VERSION message (request or reply): major, minor, JSON text + NUL (always present: QEMU reads the
 * last byte).
 */
export function encodeVersion(
  id: number,
  reply: boolean,
  major: number,
  minor: number,
  json: string,
): Uint8Array {
  const text = new TextEncoder().encode(json || '{}');
  const { msg, p } = frame(
    id,
    Command.VERSION,
    reply ? Flag.REPLY : Flag.COMMAND,
    Layout.Version.SIZE + text.length + 1,
  );
  p.set(Layout.Version.major, major);
  p.set(Layout.Version.minor, minor);
  p.u8.set(text, Layout.Version.SIZE);
  return msg;
}
