import { Bytes } from './bytes.js';
import { Command, Errno } from './constants.js';
import { einval, ProtocolError } from './errors.js';
import { request as req, reply as rep } from './header.js';
import * as Layout from './layout.js';
import type { DmaTransfer } from './types.js';

/** Server → client DMA_READ/DMA_WRITE, in the spec's layout or in QEMU 11's (§3.9). */
export type DmaLayout = 'spec' | 'qemu';

/** The fields of a DMA_READ/DMA_WRITE body in `layout`; data follows at its SIZE. */
const fieldsOf = (layout: DmaLayout) =>
  layout === 'spec' ? Layout.DmaTransferSpec : Layout.DmaTransferQemu;

/** Writes address and count in `layout`, returning where the data goes. */
function writeTransfer(p: Bytes, layout: DmaLayout, address: number, count: number): number {
  const L = fieldsOf(layout);
  p.set(L.address, address);
  p.set(L.count, count);
  return L.SIZE;
}

export const dma = {
  readRequest(id: number, layout: DmaLayout, address: number, count: number): Uint8Array {
    // Both layouts send 16 bytes: QEMU's u64 + u32 is padded to 16.
    const { msg, p } = req(id, Command.DMA_READ, Layout.DmaTransferSpec.SIZE);
    writeTransfer(p, layout, address, count);
    return msg;
  },
  writeRequest(id: number, layout: DmaLayout, address: number, data: Uint8Array): Uint8Array {
    const { msg, p } = req(id, Command.DMA_WRITE, fieldsOf(layout).SIZE + data.length);
    p.u8.set(data, writeTransfer(p, layout, address, data.length));
    return msg;
  },
  /** Decodes the client's reply to our DMA_READ: the data, checked against what we asked. */
  readReply(
    layout: DmaLayout,
    payload: Uint8Array,
    address: number,
    count: number,
  ): Uint8Array | ProtocolError {
    const L = fieldsOf(layout);
    if (payload.length < L.SIZE + count)
      return einval(`DMA_READ reply of ${payload.length} bytes lacks ${count} data bytes`);
    const b = new Bytes(payload);
    if (b.get(L.address) !== address || b.get(L.count) !== count)
      return einval('DMA_READ reply does not echo address and count');
    return payload.subarray(L.SIZE, L.SIZE + count);
  },
  /** Client side: a DMA_READ/WRITE request from the server. */
  decodeRequest(
    cmd: number,
    layout: DmaLayout,
    payload: Uint8Array,
    maxCount: number,
  ): DmaTransfer | ProtocolError {
    const L = fieldsOf(layout);
    if (payload.length < L.SIZE) return einval(`${Command[cmd]} payload too short`);
    const b = new Bytes(payload);
    const t: DmaTransfer = { address: b.get(L.address), count: b.get(L.count) };
    if (t.count > maxCount)
      return new ProtocolError(Errno.E2BIG, `${Command[cmd]} count ${t.count} exceeds ${maxCount}`);
    if (cmd === Command.DMA_WRITE) {
      if (payload.length < L.SIZE + t.count)
        return einval('DMA_WRITE carries fewer bytes than count');
      t.data = payload.subarray(L.SIZE, L.SIZE + t.count);
    }
    return t;
  },
  readReplyEncode(id: number, layout: DmaLayout, t: DmaTransfer, data: Uint8Array): Uint8Array {
    const { msg, p } = rep(id, Command.DMA_READ, fieldsOf(layout).SIZE + data.length);
    p.u8.set(data, writeTransfer(p, layout, t.address, t.count));
    return msg;
  },
  writeReplyEncode(id: number, layout: DmaLayout, t: DmaTransfer): Uint8Array {
    if (layout === 'qemu') return rep(id, Command.DMA_WRITE, 0).msg;
    const { msg, p } = rep(id, Command.DMA_WRITE, Layout.DmaTransferSpec.SIZE);
    writeTransfer(p, layout, t.address, t.count);
    return msg;
  },
};
