// Command handlers: each validates what only the device knows, acts, and returns the reply
// (bytes + fds) or an errno. No handler knows about sockets.
import {
  Command,
  Errno,
  Region,
  RegionFlag,
  RegionCapId,
  DeviceInfoFlag,
  DmaUnmapFlag,
  encode,
  bitmapBytes,
  type Request,
  type RegionCap,
} from '@vfu/protocol';
import type { OwnedFd } from '@vfu/native';
import { RegionAccessError, DmaError, type RegionHandler } from '@vfu/pci';
import type { Session } from './session.js';

export type Reply = { msg: Uint8Array; fds?: number[] } | number;
export type Handler = (
  s: Session,
  id: number,
  req: Request,
  fds: OwnedFd[],
) => Reply | Promise<Reply>;

const msg = (m: Uint8Array): Reply => ({ msg: m });

/**
 * The region behind an index: BARs and config from the device, extra regions (v1 migration) from
 * the server.
 */
export function regionOf(s: Session, index: number): RegionHandler | undefined {
  return index < Region.NUM_PCI ? s.device.region(index) : s.extraRegions[index - Region.NUM_PCI];
}

function access(
  s: Session,
  index: number,
  offset: number,
  count: number,
  fn: (r: RegionHandler) => void,
): number {
  if (index >= s.numRegions) return Errno.EINVAL;
  const r = regionOf(s, index);
  if (!r) return Errno.EINVAL;
  if (offset > r.size || count > r.size - offset) return Errno.EINVAL;
  if (count === 0) return 0;
  try {
    fn(r);
    return 0;
  } catch (e) {
    if (e instanceof RegionAccessError || e instanceof DmaError) return e.errno;
    s.log(`region ${index} access at 0x${offset.toString(16)} failed: ${(e as Error).message}`);
    return Errno.EIO;
  }
}

export const deviceHandlers: Partial<Record<Command, Handler>> = {
  [Command.DEVICE_GET_INFO]: (s, id) =>
    msg(
      encode.deviceInfo(id, {
        flags: DeviceInfoFlag.RESET | DeviceInfoFlag.PCI,
        numRegions: s.numRegions,
        numIrqs: 5,
      }),
    ),

  [Command.DEVICE_GET_REGION_INFO]: (s, id, req) => {
    if (req.cmd !== Command.DEVICE_GET_REGION_INFO) return Errno.EINVAL;
    const { index, argsz } = req.body;
    if (index >= s.numRegions) return Errno.EINVAL;
    const r = regionOf(s, index);
    if (!r)
      return msg(
        encode.regionInfo(id, argsz, { flags: 0, index, size: 0, offset: 0, caps: [] }).msg,
      );
    const caps: RegionCap[] = [...(s.regionCaps.get(index) ?? [])];
    let flags = index === Region.ROM ? RegionFlag.READ : RegionFlag.READ | RegionFlag.WRITE;
    if (r.mappable && index !== Region.CONFIG) {
      flags |= RegionFlag.MMAP;
      caps.push({ id: RegionCapId.SPARSE_MMAP, areas: r.mappable.areas });
    }
    const out = encode.regionInfo(id, argsz, { flags, index, size: r.size, offset: 0, caps });
    return { msg: out.msg, fds: out.withCaps && r.mappable ? [r.mappable.fd.fd] : [] };
  },

  [Command.DEVICE_GET_REGION_IO_FDS]: (s, id, req) => {
    if (req.cmd !== Command.DEVICE_GET_REGION_IO_FDS) return Errno.EINVAL;
    if (req.body.index >= s.numRegions || !regionOf(s, req.body.index)) return Errno.EINVAL;
    return msg(encode.ioFdsReply(id, req.body.index)); // no ioeventfds: count 0
  },

  [Command.DEVICE_GET_IRQ_INFO]: (s, id, req) => {
    if (req.cmd !== Command.DEVICE_GET_IRQ_INFO) return Errno.EINVAL;
    return msg(encode.irqInfo(id, { index: req.body.index, ...s.device.irq.info(req.body.index) }));
  },

  [Command.DEVICE_SET_IRQS]: (s, id, req, fds) => {
    if (req.cmd !== Command.DEVICE_SET_IRQS) return Errno.EINVAL;
    const e = s.device.irq.set(req.body, fds.splice(0));
    return e || msg(encode.empty(id, Command.DEVICE_SET_IRQS));
  },

  [Command.REGION_READ]: (s, id, req) => {
    if (req.cmd !== Command.REGION_READ) return Errno.EINVAL;
    const out = encode.regionReadReply(id, req.body);
    const e = access(s, req.body.region, req.body.offset, req.body.count, r =>
      r.read(req.body.offset, out.data),
    );
    return e || msg(out.msg);
  },

  [Command.REGION_WRITE]: (s, id, req) => {
    if (req.cmd !== Command.REGION_WRITE) return Errno.EINVAL;
    const e = access(s, req.body.region, req.body.offset, req.body.count, r =>
      r.write(req.body.offset, req.body.data!),
    );
    return e || msg(encode.regionWriteReply(id, req.body));
  },

  [Command.REGION_WRITE_MULTI]: (s, id, req) => {
    if (req.cmd !== Command.REGION_WRITE_MULTI || !s.caps?.writeMultiple) return Errno.EINVAL;
    let done = 0;
    for (const w of req.body.writes) {
      const e = access(s, w.region, w.offset, w.count, r => r.write(w.offset, w.data!));
      if (e) return e;
      done++;
    }
    return msg(encode.writeMultiReply(id, done));
  },

  [Command.DEVICE_RESET]: (s, id) => {
    s.resetDevice('DEVICE_RESET');
    return msg(encode.empty(id, Command.DEVICE_RESET));
  },

  [Command.DMA_MAP]: (s, id, req, fds) => {
    if (req.cmd !== Command.DMA_MAP || fds.length > 1) return Errno.EINVAL;
    const e = s.device.guest.map(req.body, fds.shift());
    return e || msg(encode.empty(id, Command.DMA_MAP));
  },

  [Command.DMA_UNMAP]: (s, id, req) => {
    if (req.cmd !== Command.DMA_UNMAP) return Errno.EINVAL;
    const b = req.body;
    if (b.flags === DmaUnmapFlag.ALL) {
      s.device.guest.unmapAll();
      return msg(encode.dmaUnmapReply(id, b));
    }
    if (b.bitmap) {
      if (!s.device.guest.logging || b.bitmap.pgsize !== s.device.guest.logPageSize)
        return Errno.EINVAL;
      if (b.bitmap.size !== bitmapBytes(b.size, b.bitmap.pgsize)) return Errno.EINVAL;
    }
    const r = s.device.guest.unmap(b.address, b.size, b.bitmap?.pgsize);
    return r.errno || msg(encode.dmaUnmapReply(id, b, r.bitmap));
  },
};
