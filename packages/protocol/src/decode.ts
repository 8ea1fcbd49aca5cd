// Decoding a client's command: structural checks only (payload sizes, argsz, flag combinations);
// device-dependent checks are the server's. Data fields are views into the payload, so nothing
// is allocated from a length the peer chose.
import { Bytes } from './bytes.js';
import {
  Command,
  DirtyPagesFlag,
  DmaUnmapFlag,
  FeatureFlag,
  Irq,
  IrqSetFlag,
  MIB,
} from './constants.js';
import { einval, type ProtocolError } from './errors.js';
import * as Layout from './layout.js';
import type { Request, SetIrqs, DmaUnmap, RegionAccess, DirtyPages, MigData } from './types.js';

export interface DecodeLimits {
  /** Largest `count` the server takes in REGION_READ/WRITE (its own max_data_xfer_size). */
  maxRegionXfer: number;
  /** Largest MIG_DATA size: the client's max_data_xfer_size (§8.6). */
  maxMigXfer: number;
}
export const defaultLimits: DecodeLimits = { maxRegionXfer: MIB, maxMigXfer: MIB };

const need = (p: Bytes, n: number, what: string) =>
  p.length < n ? einval(`${what}: payload of ${p.length} bytes, need at least ${n}`) : null;
const argsz = (v: number, n: number, what: string) =>
  v < n ? einval(`${what}: argsz ${v} is smaller than ${n}`) : null;
const oneBit = (v: number) => v !== 0 && (v & (v - 1)) === 0;

/**
 * Decodes a client command's payload (structural checks only; device-dependent checks are the
 * server's).
 */
export function decodeRequest(
  cmd: number,
  payload: Uint8Array,
  fdCount: number,
  lim: DecodeLimits = defaultLimits,
): Request | ProtocolError {
  const p = new Bytes(payload);
  let e: ProtocolError | null;
  switch (cmd) {
    case Command.DMA_MAP: {
      const L = Layout.DmaMap;
      e = need(p, L.SIZE, 'DMA_MAP');
      if (e) return e;
      const body = {
        argsz: p.get(L.argsz),
        flags: p.get(L.flags),
        offset: p.get(L.offset),
        address: p.get(L.address),
        size: p.get(L.size),
      };
      e = argsz(body.argsz, L.SIZE, 'DMA_MAP');
      if (e) return e;
      return { cmd, body };
    }
    case Command.DMA_UNMAP: {
      const L = Layout.DmaUnmap;
      const B = Layout.DmaUnmapBitmap;
      e = need(p, L.SIZE, 'DMA_UNMAP');
      if (e) return e;
      const body: DmaUnmap = {
        argsz: p.get(L.argsz),
        flags: p.get(L.flags),
        address: p.get(L.address),
        size: p.get(L.size),
      };
      if (
        body.flags !== 0 &&
        body.flags !== DmaUnmapFlag.GET_DIRTY_BITMAP &&
        body.flags !== DmaUnmapFlag.ALL
      )
        return einval(
          `DMA_UNMAP flags 0x${body.flags.toString(16)}: only GET_DIRTY_BITMAP (1) or ALL (2)`,
        );
      e = argsz(body.argsz, L.SIZE, 'DMA_UNMAP');
      if (e) return e;
      if (body.argsz > MIB) return einval(`DMA_UNMAP argsz ${body.argsz} exceeds 1 MiB`);
      if (body.flags === DmaUnmapFlag.ALL && (body.address !== 0 || body.size !== 0))
        return einval('DMA_UNMAP ALL with a non-zero address or size');
      if (body.flags === DmaUnmapFlag.GET_DIRTY_BITMAP) {
        e = need(p, B.SIZE, 'DMA_UNMAP with GET_DIRTY_BITMAP');
        if (e) return e;
        body.bitmap = { pgsize: p.get(B.pgsize), size: p.get(B.size) };
        if (body.argsz < B.SIZE + body.bitmap.size)
          return einval(
            `DMA_UNMAP argsz ${body.argsz} cannot hold a ${body.bitmap.size}-byte bitmap`,
          );
      }
      return { cmd, body };
    }
    case Command.DEVICE_GET_INFO: {
      const L = Layout.DeviceInfo;
      e = need(p, L.SIZE, 'DEVICE_GET_INFO');
      if (e) return e;
      const body = { argsz: p.get(L.argsz) };
      e = argsz(body.argsz, L.SIZE, 'DEVICE_GET_INFO');
      if (e) return e;
      return { cmd, body };
    }
    case Command.DEVICE_GET_REGION_INFO: {
      const L = Layout.RegionInfo;
      e = need(p, L.SIZE, 'DEVICE_GET_REGION_INFO');
      if (e) return e;
      const body = { argsz: p.get(L.argsz), index: p.get(L.index) };
      e = argsz(body.argsz, L.SIZE, 'DEVICE_GET_REGION_INFO');
      if (e) return e;
      return { cmd, body };
    }
    case Command.DEVICE_GET_REGION_IO_FDS: {
      const L = Layout.IoFds;
      e = need(p, L.SIZE, 'DEVICE_GET_REGION_IO_FDS');
      if (e) return e;
      const body = {
        argsz: p.get(L.argsz),
        flags: p.get(L.flags),
        index: p.get(L.index),
        count: p.get(L.count),
      };
      if (body.flags !== 0 || body.count !== 0)
        return einval('DEVICE_GET_REGION_IO_FDS flags and count must be 0');
      e = argsz(body.argsz, L.SIZE, 'DEVICE_GET_REGION_IO_FDS');
      if (e) return e;
      if (body.argsz > MIB)
        return einval(`DEVICE_GET_REGION_IO_FDS argsz ${body.argsz} exceeds 1 MiB`);
      return { cmd, body };
    }
    case Command.DEVICE_GET_IRQ_INFO: {
      const L = Layout.IrqInfo;
      e = need(p, L.SIZE, 'DEVICE_GET_IRQ_INFO');
      if (e) return e;
      const body = { argsz: p.get(L.argsz), index: p.get(L.index) };
      e = argsz(body.argsz, L.SIZE, 'DEVICE_GET_IRQ_INFO');
      if (e) return e;
      if (body.index >= Irq.COUNT) return einval(`IRQ index ${body.index} does not exist (0-4)`);
      return { cmd, body };
    }
    case Command.DEVICE_SET_IRQS: {
      const L = Layout.SetIrqs;
      e = need(p, L.SIZE, 'DEVICE_SET_IRQS');
      if (e) return e;
      const body: SetIrqs = {
        argsz: p.get(L.argsz),
        flags: p.get(L.flags),
        index: p.get(L.index),
        start: p.get(L.start),
        count: p.get(L.count),
      };
      e = argsz(body.argsz, L.SIZE, 'DEVICE_SET_IRQS');
      if (e) return e;
      e = checkSetIrqs(body, p.length, fdCount);
      if (e) return e;
      if (body.flags & IrqSetFlag.DATA_BOOL)
        body.bools = payload.subarray(L.SIZE, L.SIZE + body.count);
      return { cmd, body };
    }
    case Command.REGION_READ:
    case Command.REGION_WRITE: {
      const L = Layout.RegionAccess;
      const name = Command[cmd];
      e = need(p, L.SIZE, name);
      if (e) return e;
      const body: RegionAccess = {
        offset: p.get(L.offset),
        region: p.get(L.region),
        count: p.get(L.count),
      };
      if (body.count > lim.maxRegionXfer)
        return einval(
          `${name} count ${body.count} exceeds max_data_xfer_size ${lim.maxRegionXfer}`,
        );
      if (cmd === Command.REGION_WRITE) {
        if (p.length - L.SIZE !== body.count)
          return einval(
            `REGION_WRITE carries ${p.length - L.SIZE} data bytes but count is ${body.count}`,
          );
        body.data = payload.subarray(L.SIZE);
      }
      return { cmd, body };
    }
    case Command.DEVICE_RESET:
      return { cmd, body: {} };
    case Command.DIRTY_PAGES: {
      const L = Layout.DirtyPages;
      const R = Layout.DirtyRange;
      e = need(p, L.SIZE, 'DIRTY_PAGES');
      if (e) return e;
      const body: DirtyPages = { argsz: p.get(L.argsz), flags: p.get(L.flags) };
      e = argsz(body.argsz, L.SIZE, 'DIRTY_PAGES');
      if (e) return e;
      const op = body.flags;
      if (
        !oneBit(op) ||
        (op & ~(DirtyPagesFlag.START | DirtyPagesFlag.STOP | DirtyPagesFlag.GET_BITMAP)) !== 0
      )
        return einval(
          `DIRTY_PAGES flags 0x${op.toString(16)}: exactly one of START, STOP, GET_BITMAP`,
        );
      if (op === DirtyPagesFlag.GET_BITMAP) {
        e = need(p, R.SIZE, 'DIRTY_PAGES GET_BITMAP');
        if (e) return e;
        if (body.argsz > MIB) return einval(`DIRTY_PAGES argsz ${body.argsz} exceeds 1 MiB`);
        body.range = {
          iova: p.get(R.iova),
          size: p.get(R.size),
          pgsize: p.get(R.pgsize),
          bitmapSize: p.get(R.bitmapSize),
        };
      }
      return { cmd, body };
    }
    case Command.REGION_WRITE_MULTI: {
      const L = Layout.WriteMulti;
      const W = Layout.WriteMultiEntry;
      e = need(p, L.SIZE, 'REGION_WRITE_MULTI');
      if (e) return e;
      const n = p.get(L.count);
      const room = Math.floor((p.length - L.SIZE) / W.SIZE);
      if (n > room)
        return einval(`REGION_WRITE_MULTI announces ${n} writes but carries room for ${room}`);
      const writes: RegionAccess[] = [];
      for (let i = 0; i < n; i++) {
        const o = L.SIZE + W.SIZE * i;
        const count = p.getAt(o, W.count);
        if (count > W.MAX_DATA)
          return einval(`REGION_WRITE_MULTI entry ${i} count ${count} exceeds ${W.MAX_DATA}`);
        writes.push({
          offset: p.getAt(o, W.offset),
          region: p.getAt(o, W.region),
          count,
          data: payload.subarray(o + W.DATA, o + W.DATA + count),
        });
      }
      return { cmd, body: { writes } };
    }
    case Command.DEVICE_FEATURE: {
      const L = Layout.Feature;
      e = need(p, L.SIZE, 'DEVICE_FEATURE');
      if (e) return e;
      const body = {
        argsz: p.get(L.argsz),
        flags: p.get(L.flags),
        data: payload.subarray(L.SIZE),
      };
      e = argsz(body.argsz, L.SIZE, 'DEVICE_FEATURE');
      if (e) return e;
      const ops = body.flags & (FeatureFlag.GET | FeatureFlag.SET | FeatureFlag.PROBE);
      if (
        (body.flags &
          ~(FeatureFlag.MASK | FeatureFlag.GET | FeatureFlag.SET | FeatureFlag.PROBE)) !==
        0
      )
        return einval(`DEVICE_FEATURE flags 0x${body.flags.toString(16)}: bits 19-31 must be 0`);
      if (ops === 0) return einval('DEVICE_FEATURE without GET, SET or PROBE');
      if ((ops & FeatureFlag.PROBE) === 0 && ops & FeatureFlag.GET && ops & FeatureFlag.SET)
        return einval('DEVICE_FEATURE GET and SET together without PROBE');
      return { cmd, body };
    }
    case Command.MIG_DATA_READ:
    case Command.MIG_DATA_WRITE: {
      const L = Layout.MigData;
      const name = Command[cmd];
      e = need(p, L.SIZE, name);
      if (e) return e;
      const body: MigData = { argsz: p.get(L.argsz), size: p.get(L.size) };
      if (body.size > lim.maxMigXfer)
        return einval(`${name} size ${body.size} exceeds max_data_xfer_size ${lim.maxMigXfer}`);
      if (cmd === Command.MIG_DATA_READ) {
        if (body.argsz < L.SIZE + body.size)
          return einval(`MIG_DATA_READ argsz ${body.argsz} cannot hold ${body.size} bytes`);
      } else {
        if (p.length < L.SIZE + body.size)
          return einval(
            `MIG_DATA_WRITE carries ${p.length - L.SIZE} data bytes, fewer than size ${body.size}`,
          );
        body.data = payload.subarray(L.SIZE, L.SIZE + body.size);
      }
      return { cmd, body };
    }
    default:
      return einval(`unknown or unexpected command ${cmd}`);
  }
}

/**
 * SET_IRQS checks that need no knowledge of the device (lvu `device_set_irqs_validate`, kernel).
 */
function checkSetIrqs(b: SetIrqs, payloadLen: number, fdCount: number): ProtocolError | null {
  const data = b.flags & IrqSetFlag.DATA_TYPE_MASK,
    action = b.flags & IrqSetFlag.ACTION_TYPE_MASK;
  if (b.flags & ~(IrqSetFlag.DATA_TYPE_MASK | IrqSetFlag.ACTION_TYPE_MASK))
    return einval(`SET_IRQS unknown flag bits 0x${b.flags.toString(16)}`);
  if (!oneBit(data)) return einval('SET_IRQS needs exactly one data type (NONE, BOOL or EVENTFD)');
  if (!oneBit(action)) return einval('SET_IRQS needs exactly one action (MASK, UNMASK or TRIGGER)');
  if (b.index >= Irq.COUNT) return einval(`IRQ index ${b.index} does not exist (0-4)`);
  const fixed = Layout.SetIrqs.SIZE;
  if (data === IrqSetFlag.DATA_BOOL && payloadLen !== fixed + b.count)
    return einval(`SET_IRQS DATA_BOOL with ${payloadLen - fixed} bytes for count ${b.count}`);
  if (b.count >= 0xffffffff - b.start) return einval('SET_IRQS start + count overflows');
  if ((b.index === Irq.ERR || b.index === Irq.REQ) && action !== IrqSetFlag.ACTION_TRIGGER)
    return einval('ERR and REQ interrupts take only TRIGGER');
  if ((b.index === Irq.ERR || b.index === Irq.REQ) && b.count > 1)
    return einval('ERR and REQ interrupts have one vector');
  if (b.count === 0 && b.start !== 0) return einval('SET_IRQS count 0 with a non-zero start');
  if (b.count === 0 && !(data === IrqSetFlag.DATA_NONE && action === IrqSetFlag.ACTION_TRIGGER))
    return einval('SET_IRQS count 0 is only for TRIGGER|DATA_NONE (disable the index)');
  if (fdCount > 0 && data !== IrqSetFlag.DATA_EVENTFD)
    return einval('SET_IRQS carries fds but its data type is not EVENTFD');
  if (fdCount > 0 && fdCount !== b.count)
    return einval(`SET_IRQS carries ${fdCount} fds for ${b.count} vectors`);
  return null;
}
