// The two ends of a migration as the driver (driver.ts) uses them: a source device through v2's
// DEVICE_FEATURE and MIG_DATA_READ/WRITE, or through v1's migration region (with its data
// window mapped where the server allows it), and a destination server's device as the
// destination half (destination.ts).
import { mapArea, type VfioUserClient } from '@vfu/client';
import type { OwnedFd } from '@vfu/native';
import {
  RegionCapId,
  MIGRATION_REGION_TYPE,
  MIGRATION_REGION_SUBTYPE,
  V1MigrationReg,
  type RegionInfo,
} from '@vfu/protocol';
import { V1, fromV1, toV1 } from '@vfu/fsm';
import { LocalDestination } from './destination.js';
import { MigrationFailure } from './failure.js';

export interface Endpoint {
  /** Moves the device toward a migration state (v2 state numbers). */
  set(state: number): Promise<void>;
  state(): Promise<number>;
  read(max: number): Promise<Uint8Array>;
  write(data: Uint8Array): Promise<void>;
  /** Bytes read() returned are no longer needed: their memory takes the next reply. */
  done(data: Uint8Array): void;
  pending(): Promise<{ initial: number; dirty: number; stopCopy: number }>;
  /** v1: the data window is read and written through a mapping. */
  readonly mapped?: boolean;
  /** Releases what the endpoint holds (a v1 window's mapping). */
  close?(): void;
}

export function v2(c: VfioUserClient): Endpoint {
  return {
    set: s => c.setState(s),
    state: () => c.getState(),
    read: max => c.migDataRead(max),
    write: d => c.migDataWrite(d),
    done: d => c.recycle(d),
    pending: async () => {
      let initial = 0,
        dirty = 0;
      try {
        const p = await c.precopyInfo();
        initial = p.initialBytes;
        dirty = p.dirtyBytes;
      } catch {
        /* not in PRE_COPY */
      }
      let stopCopy = 100 * 2 ** 30; // QEMU assumes 100 GiB when MIG_DATA_SIZE fails
      try {
        stopCopy = await c.dataSize();
      } catch {
        /* keep */
      }
      return { initial, dirty, stopCopy };
    },
  };
}

/**
 * The v1 data window as a mapping where the server offers one (protocol.md §7.1): chunks then
 * move with a memcpy instead of REGION_READ/REGION_WRITE. Null when not `wanted` or not
 * mappable (messages still work); the info's fd is closed either way.
 */
function mapWindow(region: number, info: RegionInfo & { fd?: OwnedFd }, wanted: boolean) {
  if (!wanted) {
    info.fd?.close();
    return null;
  }
  try {
    return mapArea(region, info);
  } catch {
    return null;
  }
}

const outsideRegion = (side: string, off: number, n: number, size: number) =>
  new MigrationFailure(
    `the ${side}'s v1 data window [${off}, +${n}) lies outside its ${size}-byte migration region`,
  );

const isMigrationRegion = (info: RegionInfo) =>
  info.caps.some(
    cap =>
      cap.id === RegionCapId.TYPE &&
      cap.type === MIGRATION_REGION_TYPE &&
      cap.subtype === MIGRATION_REGION_SUBTYPE,
  );

/** The first region from 9 on with the v1 migration type, and its info (fd kept open). */
async function findMigrationRegion(c: VfioUserClient) {
  const { numRegions } = await c.deviceInfo();
  for (let region = 9; region < numRegions; region++) {
    const regionInfo = await c.regionInfo(region);
    if (isMigrationRegion(regionInfo)) return { region, regionInfo };
    regionInfo.fd?.close();
  }
  throw new MigrationFailure('the device has no v1 migration region');
}

/**
 * v1: the migration region, found by its type capability as QEMU does (§10.6). With
 * `mapWindow`, the data window is used through a mapping where the server allows it.
 */
export async function v1(c: VfioUserClient, opts: { mapWindow?: boolean } = {}): Promise<Endpoint> {
  const { region, regionInfo } = await findMigrationRegion(c);
  const size = regionInfo.size;
  const window = mapWindow(region, regionInfo, opts.mapWindow ?? false);
  const windowEnd = window ? window.offset + window.size : 0;
  const inWindow = (off: number, n: number) =>
    window !== null && off >= window.offset && off + n <= windowEnd;
  const Reg = V1MigrationReg;
  const u64 = async (o: number) => {
    const b = await c.regionRead(region, o, 8);
    return Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true));
  };
  const max = c.serverCaps.maxDataXferSize;
  let pending = 0;
  let joined = new Uint8Array(0); // a chunk read in pieces, put together (reused)
  let mapped: Uint8Array | null = null; // the last chunk read, as a view of the mapping
  const writeDataSize = (n: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
    return c.regionWrite(region, Reg.DATA_SIZE, b);
  };
  return {
    set: async s => {
      // read-modify-write, as QEMU does
      const cur = await c.read32(region, Reg.DEVICE_STATE);
      await c.write32(region, Reg.DEVICE_STATE, (cur & ~V1.MASK) | (toV1(s) ?? 0));
    },
    state: async () => fromV1((await c.read32(region, Reg.DEVICE_STATE)) & V1.MASK) ?? -1,
    read: async () => {
      pending = await u64(Reg.PENDING_BYTES);
      if (pending === 0) return new Uint8Array(0);
      // In order on the socket: data_offset prepares the chunk before data_size is read.
      const [off, n] = await Promise.all([u64(Reg.DATA_OFFSET), u64(Reg.DATA_SIZE)]);
      if (off + n > size) throw outsideRegion('source', off, n, size);
      if (inWindow(off, n)) {
        mapped = window!.map.bytes(off - window!.offset, n); // valid until pending_bytes is read
        return mapped;
      }
      // A chunk that fits one reply is that reply's bytes (given back by done()); a larger one
      // is put together in a buffer kept for the next, not in fresh memory each time.
      if (n <= max) return c.regionRead(region, off, n);
      if (joined.length < n) joined = new Uint8Array(n);
      for (let d = 0; d < n; d += max) {
        const piece = await c.regionRead(region, off + d, Math.min(max, n - d));
        joined.set(piece, d);
        c.recycle(piece);
      }
      return joined.subarray(0, n);
    },
    done: d => {
      if (d.buffer !== joined.buffer && d !== mapped) c.recycle(d);
    },
    write: async data => {
      for (let done = 0; done < data.length; ) {
        const off = await u64(Reg.DATA_OFFSET);
        if (off >= size) throw outsideRegion('destination', off, 0, size);
        const room = Math.min(data.length - done, size - off);
        const n = inWindow(off, 1) ? Math.min(room, windowEnd - off) : Math.min(room, max);
        const piece = data.subarray(done, done + n);
        if (inWindow(off, n)) window!.map.bytes(off - window!.offset, n).set(piece);
        else await c.regionWrite(region, off, piece);
        await writeDataSize(n);
        done += n;
      }
    },
    pending: async () => {
      const p = await u64(Reg.PENDING_BYTES);
      return { initial: 0, dirty: p, stopCopy: p };
    },
    mapped: window !== null,
    close: () => window?.map.release(),
  };
}

/** The destination half for a destination server's client in this process. */
export const localDestination = (dst: VfioUserClient, mapWindow = false): LocalDestination =>
  new LocalDestination(dst, (c, protocol) =>
    protocol === 'v2' ? Promise.resolve(v2(c)) : v1(c, { mapWindow }),
  );
