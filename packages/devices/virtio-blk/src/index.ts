// virtio-blk (virtio 1.2 §5.2) over a raw image file: IN, OUT, FLUSH, GET_ID, DISCARD and
// WRITE_ZEROES on any number of queues, many requests in flight through Node's asynchronous file
// API (libuv's thread pool). Writes reach the file at once and are durable after FLUSH
// (fdatasync), so FLUSH is offered: Linux then sends one whenever it needs durability.
import {
  closeSync,
  constants,
  fdatasync,
  fstatSync,
  ftruncateSync,
  openSync,
  read,
  write,
} from 'node:fs';
import { basename } from 'node:path';
import {
  DeviceSetupError,
  parseSize,
  type DeviceContext,
  type Options,
  defineVirtioDevice,
  VirtqueueError,
  type VirtioDeviceDefinition,
  type VirtioRequest,
} from '@vfu/virtio';

/** Request types (§5.2.6). */
export const BlkType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  DISCARD: 11,
  WRITE_ZEROES: 13,
} as const;
/** Request status (§5.2.6). */
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;
/** VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: the one segment flag defined (§5.2.6). */
const WRITE_ZEROES_UNMAP = 1;
/** Feature bits (§5.2.3). */
export const BlkFeature = {
  SEG_MAX: 2,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
} as const;

export const SECTOR = 512;
const QUEUE_SIZE = 256;
/** Largest DISCARD / WRITE_ZEROES range per segment, and segments per request. */
export const MAX_ZERO_SECTORS = 1 << 15;
export const MAX_ZERO_SEGMENTS = 8;
/** The device configuration (§5.2.4) up to and including write_zeroes_may_unmap. */
const CONFIG_SIZE = 0x3c;
const ZERO_CHUNK = 1 << 20;

export interface Disk {
  fd: number;
  path: string;
  sectors: number;
  readOnly: boolean;
  queues: number;
  /** The `stall` control: requests wait (in flight) before their I/O until it is released. */
  stalled: (() => void)[] | null;
}

const yes = (v: string) => {
  if (['on', 'true', 'yes', '1'].includes(v)) return true;
  if (['off', 'false', 'no', '0', ''].includes(v)) return false;
  throw new DeviceSetupError(`--read-only ${v}: say on or off`);
};

function queueCount(o: Options): number {
  const n = Number(o.queues);
  if (!Number.isInteger(n) || n < 1 || n > 15)
    throw new DeviceSetupError(`--queues ${o.queues}: 1 to 15 request queues`);
  return n;
}

/** Opens (or, with --size, creates sparse) the image; its size must be whole sectors. */
function openDisk(o: Options): Disk {
  if (!o.disk) throw new DeviceSetupError('virtio-blk needs --disk PATH (a raw image file)');
  const readOnly = yes(o['read-only']);
  const size = o.size ? parseSize(o.size) : undefined;
  if (size !== undefined && (size === 0 || size % SECTOR))
    throw new DeviceSetupError(`--size ${o.size}: a positive multiple of ${SECTOR} bytes`);
  let fd: number;
  try {
    const flags = readOnly ? constants.O_RDONLY : constants.O_RDWR | (size ? constants.O_CREAT : 0);
    fd = openSync(o.disk, flags, 0o644);
  } catch (e) {
    throw new DeviceSetupError(`--disk ${o.disk}: ${(e as Error).message}`);
  }
  const st = fstatSync(fd);
  if (size !== undefined && st.size !== size) {
    if (readOnly || st.size !== 0) {
      closeSync(fd);
      throw new DeviceSetupError(
        `--disk ${o.disk} is ${st.size} bytes; --size ${o.size} only sizes a new or empty image`,
      );
    }
    ftruncateSync(fd, size); // sparse: no blocks allocated
  }
  const bytes = size ?? st.size;
  if (bytes === 0 || bytes % SECTOR) {
    closeSync(fd);
    throw new DeviceSetupError(`--disk ${o.disk}: ${bytes} bytes is not a whole number of sectors`);
  }
  return {
    fd,
    path: o.disk,
    sectors: bytes / SECTOR,
    readOnly,
    queues: queueCount(o),
    stalled: null,
  };
}

/** struct virtio_blk_config (§5.2.4). */
function config(d: Disk): Uint8Array {
  const b = new Uint8Array(CONFIG_SIZE);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0x00, BigInt(d.sectors), true); // capacity
  dv.setUint32(0x0c, QUEUE_SIZE - 2, true); // seg_max (a request header and status besides)
  dv.setUint32(0x14, SECTOR, true); // blk_size
  dv.setUint16(0x22, d.queues, true); // num_queues
  dv.setUint32(0x24, MAX_ZERO_SECTORS, true); // max_discard_sectors
  dv.setUint32(0x28, MAX_ZERO_SEGMENTS, true); // max_discard_seg
  dv.setUint32(0x2c, 1, true); // discard_sector_alignment
  dv.setUint32(0x30, MAX_ZERO_SECTORS, true); // max_write_zeroes_sectors
  dv.setUint32(0x34, MAX_ZERO_SEGMENTS, true); // max_write_zeroes_seg
  dv.setUint8(0x38, 0); // write_zeroes_may_unmap
  return b;
}

const io = (
  op: typeof read | typeof write,
  fd: number,
  buf: Uint8Array,
  position: number,
): Promise<number> =>
  new Promise((resolve, reject) =>
    (op as typeof read)(fd, buf, 0, buf.length, position, (e, n) => (e ? reject(e) : resolve(n))),
  );

/** Reads or writes all of `buf` at `position` (the calls may move fewer bytes). */
async function all(op: typeof read | typeof write, fd: number, buf: Uint8Array, position: number) {
  for (let done = 0; done < buf.length; ) {
    const n = await io(op, fd, buf.subarray(done), position + done);
    if (n === 0) {
      if (op === write) throw new Error('short write');
      buf.fill(0, done); // past the end of a file that shrank: zeros
      return;
    }
    done += n;
  }
}

const sync = (fd: number) =>
  new Promise<void>((resolve, reject) => fdatasync(fd, e => (e ? reject(e) : resolve())));

/**
 * The answer: `data`, then the status byte in the last device-writable byte (§5.2.6: the status
 * follows whatever data buffer the driver gave, even when no data is returned).
 */
function reply(writable: number, status: number, data?: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.max(1, writable));
  if (data) out.set(data.subarray(0, out.length - 1));
  out[out.length - 1] = status;
  return out;
}

const inRange = (d: Disk, sector: number, bytes: number) =>
  bytes % SECTOR === 0 && sector <= d.sectors && bytes / SECTOR <= d.sectors - sector;

/** DISCARD and WRITE_ZEROES (§5.2.6.2): segments of {sector, num_sectors, flags}. */
async function zeroRanges(d: Disk, type: number, body: Uint8Array): Promise<number> {
  if (d.readOnly) return BlkStatus.IOERR;
  if (body.length === 0 || body.length % 16 || body.length / 16 > MAX_ZERO_SEGMENTS)
    return BlkStatus.UNSUPP;
  const dv = new DataView(body.buffer, body.byteOffset, body.length);
  const ranges: [number, number][] = [];
  for (let o = 0; o < body.length; o += 16) {
    const sector = Number(dv.getBigUint64(o, true));
    const count = dv.getUint32(o + 8, true);
    const flags = dv.getUint32(o + 12, true);
    // The unmap flag means something only for WRITE_ZEROES; other bits are reserved.
    if (flags & ~(type === BlkType.WRITE_ZEROES ? WRITE_ZEROES_UNMAP : 0)) return BlkStatus.UNSUPP;
    if (count > MAX_ZERO_SECTORS || !inRange(d, sector, count * SECTOR)) return BlkStatus.IOERR;
    ranges.push([sector, count]);
  }
  // A discarded range may read back as anything (§5.2.6.2); zeros are the simplest answer, as
  // Node's file API has no hole punching.
  const zeros = new Uint8Array(Math.min(ZERO_CHUNK, MAX_ZERO_SECTORS * SECTOR));
  for (const [sector, count] of ranges)
    for (let at = 0; at < count * SECTOR; at += zeros.length) {
      const n = Math.min(zeros.length, count * SECTOR - at);
      await all(write, d.fd, zeros.subarray(0, n), sector * SECTOR + at);
    }
  return BlkStatus.OK;
}

/**
 * One request (§5.2.6): header {type, reserved, sector}, data, status byte last. Its file I/O
 * goes through `io`: it starts only while the device runs, and a stop waits for it to finish, so
 * a migration source touches the image no more once its device is stopped.
 */
export async function serve(
  req: VirtioRequest,
  d: Disk,
  io: DeviceContext<never>['io'],
): Promise<Uint8Array> {
  // §5.2.6.1: a request without its header or status byte is a driver error (NEEDS_RESET).
  if (req.data.length < 16 || req.writable < 1)
    throw new VirtqueueError('virtio-blk request without its 16-byte header or status byte');
  const dv = new DataView(req.data.buffer, req.data.byteOffset, req.data.length);
  const type = dv.getUint32(0, true);
  const sector = Number(dv.getBigUint64(8, true));
  const body = req.data.subarray(16);
  const inLen = req.writable - 1;
  if (d.stalled) await new Promise<void>(go => d.stalled?.push(go));
  return io(() => perform(req, d, type, sector, body, inLen));
}

async function perform(
  req: VirtioRequest,
  d: Disk,
  type: number,
  sector: number,
  body: Uint8Array,
  inLen: number,
): Promise<Uint8Array> {
  try {
    switch (type) {
      case BlkType.IN: {
        if (!inRange(d, sector, inLen)) return reply(req.writable, BlkStatus.IOERR);
        // Read straight into the answer (the data, then the status byte): no second copy.
        // Every byte is written below before it is returned (a failed read answers IOERR).
        const answer = Buffer.allocUnsafe(req.writable);
        await all(read, d.fd, answer.subarray(0, inLen), sector * SECTOR);
        answer[inLen] = BlkStatus.OK;
        return answer;
      }
      case BlkType.OUT:
        if (d.readOnly || !inRange(d, sector, body.length))
          return reply(req.writable, BlkStatus.IOERR);
        await all(write, d.fd, body, sector * SECTOR);
        return reply(req.writable, BlkStatus.OK);
      case BlkType.FLUSH:
        if (!d.readOnly) await sync(d.fd);
        return reply(req.writable, BlkStatus.OK);
      case BlkType.GET_ID: {
        // 20 bytes, not NUL-terminated when all are used (§5.2.6).
        const id = new TextEncoder().encode(basename(d.path)).subarray(0, 20);
        const out = new Uint8Array(Math.min(20, inLen));
        out.set(id.subarray(0, out.length));
        return reply(req.writable, BlkStatus.OK, out);
      }
      case BlkType.DISCARD:
      case BlkType.WRITE_ZEROES:
        return reply(req.writable, await zeroRanges(d, type, body));
      default:
        return reply(req.writable, BlkStatus.UNSUPP);
    }
  } catch {
    return reply(req.writable, BlkStatus.IOERR);
  }
}

/** The model as declared: the PCI transport (the default export) and vhost-user both take it. */
export const virtioBlk = {
  id: 'virtio-blk',
  version: 1,
  description: 'virtio block device over a raw image file',
  virtioId: 2,
  classCode: 0x010000, // mass storage, as QEMU presents virtio-blk
  options: {
    disk: { description: 'raw image file (required)', default: '' },
    size: {
      description: 'create the image sparse with this size if new or empty (e.g. 64M)',
      default: '',
    },
    'read-only': { description: 'on: refuse writes (VIRTIO_BLK_F_RO)', default: 'off' },
    queues: { description: 'number of request queues (1 to 15)', default: '1' },
  },
  backend: openDisk,
  features: (_o, d) => [
    BlkFeature.SEG_MAX,
    BlkFeature.BLK_SIZE,
    BlkFeature.FLUSH,
    BlkFeature.MQ,
    BlkFeature.DISCARD,
    BlkFeature.WRITE_ZEROES,
    ...(d.readOnly ? [BlkFeature.RO] : []),
  ],
  configSize: CONFIG_SIZE,
  config: (_o, d) => config(d),
  queues: o => ({ count: queueCount(o), size: QUEUE_SIZE }),
  controls: {
    // 1: hold every new request before its I/O (it stays in flight); 0: let them all go. For
    // tests and demos of a migration with requests in flight.
    stall: (d, on) => {
      if (on) {
        d.stalled ??= [];
        return;
      }
      const waiting = d.stalled ?? [];
      d.stalled = null;
      for (const go of waiting) go();
    },
  },
  handle: (req, d, dev) => serve(req, d, dev.io),
} satisfies VirtioDeviceDefinition<Record<never, never>, Disk>;

export default defineVirtioDevice(virtioBlk);
