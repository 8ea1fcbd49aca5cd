import { Bytes } from './bytes.js';
import { Command } from './constants.js';
import { einval, ProtocolError } from './errors.js';
import { request as req, reply as rep } from './header.js';
import type { DmaTransfer } from './types.js';

/** Server → client DMA_READ/DMA_WRITE, in the spec's layout or in QEMU 11's (§3.9). */
export type DmaLayout = 'spec' | 'qemu';
export const dma = {
  readRequest(id: number, layout: DmaLayout, address: number, count: number): Uint8Array {
    // QEMU: u64 + u32 + pad
    const { msg, p } = req(id, Command.DMA_READ, layout === 'spec' ? 16 : 16);
    p.setU64(0, address);
    if (layout === 'spec') p.setU64(8, count);
    else p.setU32(8, count);
    return msg;
  },
  writeRequest(id: number, layout: DmaLayout, address: number, data: Uint8Array): Uint8Array {
    const at = layout === 'spec' ? 16 : 12;
    const { msg, p } = req(id, Command.DMA_WRITE, at + data.length);
    p.setU64(0, address);
    if (layout === 'spec') p.setU64(8, data.length);
    else p.setU32(8, data.length);
    p.u8.set(data, at);
    return msg;
  },
  /** Decodes the client's reply to our DMA_READ: the data, checked against what we asked. */
  readReply(
    layout: DmaLayout,
    payload: Uint8Array,
    address: number,
    count: number,
  ): Uint8Array | ProtocolError {
    const at = layout === 'spec' ? 16 : 12;
    if (payload.length < at + count)
      return einval(`DMA_READ reply of ${payload.length} bytes lacks ${count} data bytes`);
    const b = new Bytes(payload);
    const cnt = layout === 'spec' ? b.u64(8) : b.u32(8);
    if (b.u64(0) !== address || cnt !== count)
      return einval('DMA_READ reply does not echo address and count');
    return payload.subarray(at, at + count);
  },
  /** Client side: a DMA_READ/WRITE request from the server. */
  decodeRequest(
    cmd: number,
    layout: DmaLayout,
    payload: Uint8Array,
    maxCount: number,
  ): DmaTransfer | ProtocolError {
    const at = layout === 'spec' ? 16 : 12;
    if (payload.length < (layout === 'spec' ? 16 : 12))
      return einval(`${Command[cmd]} payload too short`);
    const b = new Bytes(payload);
    const t: DmaTransfer = { address: b.u64(0), count: layout === 'spec' ? b.u64(8) : b.u32(8) };
    if (t.count > maxCount)
      return new ProtocolError(7, `${Command[cmd]} count ${t.count} exceeds ${maxCount}`);
    if (cmd === Command.DMA_WRITE) {
      if (payload.length < at + t.count) return einval('DMA_WRITE carries fewer bytes than count');
      t.data = payload.subarray(at, at + t.count);
    }
    return t;
  },
  readReplyEncode(id: number, layout: DmaLayout, t: DmaTransfer, data: Uint8Array): Uint8Array {
    const at = layout === 'spec' ? 16 : 12;
    const { msg, p } = rep(id, Command.DMA_READ, at + data.length);
    p.setU64(0, t.address);
    if (layout === 'spec') p.setU64(8, t.count);
    else p.setU32(8, t.count);
    p.u8.set(data, at);
    return msg;
  },
  writeReplyEncode(id: number, layout: DmaLayout, t: DmaTransfer): Uint8Array {
    if (layout === 'qemu') return rep(id, Command.DMA_WRITE, 0).msg;
    const { msg, p } = rep(id, Command.DMA_WRITE, 16);
    p.setU64(0, t.address);
    p.setU64(8, t.count);
    return msg;
  },
};
