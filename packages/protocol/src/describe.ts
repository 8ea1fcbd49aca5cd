import { Command, commandName, Flag, HEADER_SIZE } from './constants.js';
import { Bytes } from './bytes.js';
import { errnoName } from './errors.js';
import type { Header } from './header.js';

const hex = (n: number) => `0x${n.toString(16)}`;

/** The JSON text of a VERSION payload, without its NUL terminator. */
const versionJson = (payload: Uint8Array) =>
  Buffer.from(payload.subarray(4)).toString().replace(/\0$/, '');

/** One readable line for a message, for --trace. */
export function describeMessage(dir: '<-' | '->', h: Header, payload: Uint8Array, fds = 0): string {
  const type = (h.flags & Flag.TYPE_MASK) === Flag.REPLY ? 'reply' : 'cmd';
  const extra: string[] = [];
  if (h.flags & Flag.NO_REPLY) extra.push('no-reply');
  if (h.flags & Flag.ERROR) extra.push(`error=${errnoName(h.error)}`);
  if (fds) extra.push(`fds=${fds}`);
  const p = new Bytes(payload);
  let body = '';
  try {
    if (!(h.flags & Flag.ERROR))
      switch (h.cmd) {
        case Command.REGION_READ:
        case Command.REGION_WRITE:
          if (p.length >= 16)
            body =
              `region=${p.u32(8)} offset=${hex(p.u64(0))} count=${p.u32(12)}` +
              (p.length > 16 && p.length <= 24
                ? ` data=${Buffer.from(payload.subarray(16)).toString('hex')}`
                : '');
          break;
        case Command.DMA_MAP:
          if (p.length >= 32)
            body =
              `iova=${hex(p.u64(16))} size=${hex(p.u64(24))} ` +
              `flags=${p.u32(4)} offset=${hex(p.u64(8))}`;
          break;
        case Command.DMA_UNMAP:
          if (p.length >= 24)
            body = `iova=${hex(p.u64(8))} size=${hex(p.u64(16))} flags=${p.u32(4)}`;
          break;
        case Command.DEVICE_GET_REGION_INFO:
          if (p.length >= 32)
            body =
              `index=${p.u32(8)} argsz=${p.u32(0)}` +
              (type === 'reply' ? ` size=${hex(p.u64(16))} flags=${p.u32(4)}` : '');
          break;
        case Command.DEVICE_GET_IRQ_INFO:
          if (p.length >= 16)
            body =
              `index=${p.u32(8)}` +
              (type === 'reply' ? ` count=${p.u32(12)} flags=${p.u32(4)}` : '');
          break;
        case Command.DEVICE_SET_IRQS:
          if (p.length >= 20)
            body = `index=${p.u32(8)} flags=${hex(p.u32(4))} start=${p.u32(12)} count=${p.u32(16)}`;
          break;
        case Command.DEVICE_FEATURE:
          if (p.length >= 8)
            body =
              `feature=${p.u32(4) & 0xffff} ops=${hex(p.u32(4) >>> 16)}` +
              (p.length >= 12 ? ` data0=${p.u32(8)}` : '');
          break;
        case Command.MIG_DATA_READ:
        case Command.MIG_DATA_WRITE:
          if (p.length >= 8) body = `size=${p.u32(4)}`;
          break;
        case Command.VERSION:
          if (p.length >= 4) body = `${p.u16(0)}.${p.u16(2)} ${versionJson(payload)}`;
          break;
      }
  } catch {
    body = '(undecodable)';
  }
  const words = [dir, `#${h.id}`, commandName(h.cmd), type, `size=${h.size - HEADER_SIZE}`];
  return [...words, ...extra, ...(body ? [body] : [])].join(' ');
}
