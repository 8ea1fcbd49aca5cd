import { Command, commandName, FeatureFlag, Flag, HEADER_SIZE } from './constants.js';
import { Bytes } from './bytes.js';
import { errnoName } from './errors.js';
import type { Header } from './header.js';
import * as Layout from './layout.js';

const hex = (n: number) => `0x${n.toString(16)}`;

/** The JSON text of a VERSION payload, without its NUL terminator. */
const versionJson = (payload: Uint8Array) =>
  Buffer.from(payload.subarray(Layout.Version.SIZE)).toString().replace(/\0$/, '');

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
          body = describeAccess(p);
          break;
        case Command.DMA_MAP:
          body = describeDmaMap(p);
          break;
        case Command.DMA_UNMAP:
          body = describeDmaUnmap(p);
          break;
        case Command.DEVICE_GET_REGION_INFO:
          body = describeRegionInfo(p, type === 'reply');
          break;
        case Command.DEVICE_GET_IRQ_INFO:
          body = describeIrqInfo(p, type === 'reply');
          break;
        case Command.DEVICE_SET_IRQS:
          body = describeSetIrqs(p);
          break;
        case Command.DEVICE_FEATURE:
          body = describeFeature(p);
          break;
        case Command.MIG_DATA_READ:
        case Command.MIG_DATA_WRITE:
          if (p.length >= Layout.MigData.SIZE) body = `size=${p.get(Layout.MigData.size)}`;
          break;
        case Command.VERSION:
          body = describeVersion(p);
          break;
      }
  } catch {
    body = '(undecodable)';
  }
  const words = [dir, `#${h.id}`, commandName(h.cmd), type, `size=${h.size - HEADER_SIZE}`];
  return [...words, ...extra, ...(body ? [body] : [])].join(' ');
}

// One describer a message body: each returns '' when the payload is too short for its layout.

/** REGION_READ/WRITE, with the data when it is short enough to read (up to 8 bytes). */
function describeAccess(p: Bytes): string {
  const L = Layout.RegionAccess;
  if (p.length < L.SIZE) return '';
  const words = `region=${p.get(L.region)} offset=${hex(p.get(L.offset))} count=${p.get(L.count)}`;
  const dataBytes = p.length - L.SIZE;
  if (dataBytes === 0 || dataBytes > 8) return words;
  return `${words} data=${Buffer.from(p.u8.subarray(L.SIZE)).toString('hex')}`;
}

function describeDmaMap(p: Bytes): string {
  const L = Layout.DmaMap;
  if (p.length < L.SIZE) return '';
  const range = `iova=${hex(p.get(L.address))} size=${hex(p.get(L.size))}`;
  return `${range} flags=${p.get(L.flags)} offset=${hex(p.get(L.offset))}`;
}

function describeDmaUnmap(p: Bytes): string {
  const L = Layout.DmaUnmap;
  if (p.length < L.SIZE) return '';
  return `iova=${hex(p.get(L.address))} size=${hex(p.get(L.size))} flags=${p.get(L.flags)}`;
}

function describeRegionInfo(p: Bytes, reply: boolean): string {
  const L = Layout.RegionInfo;
  if (p.length < L.SIZE) return '';
  const asked = `index=${p.get(L.index)} argsz=${p.get(L.argsz)}`;
  return reply ? `${asked} size=${hex(p.get(L.size))} flags=${p.get(L.flags)}` : asked;
}

function describeIrqInfo(p: Bytes, reply: boolean): string {
  const L = Layout.IrqInfo;
  if (p.length < L.SIZE) return '';
  const asked = `index=${p.get(L.index)}`;
  return reply ? `${asked} count=${p.get(L.count)} flags=${p.get(L.flags)}` : asked;
}

function describeSetIrqs(p: Bytes): string {
  const L = Layout.SetIrqs;
  if (p.length < L.SIZE) return '';
  const vectors = `start=${p.get(L.start)} count=${p.get(L.count)}`;
  return `index=${p.get(L.index)} flags=${hex(p.get(L.flags))} ${vectors}`;
}

/** The feature index and operations, and the data's first u32 (a state, for MIG_DEVICE_STATE). */
function describeFeature(p: Bytes): string {
  const L = Layout.Feature;
  if (p.length < L.SIZE) return '';
  const flags = p.get(L.flags);
  const words = `feature=${flags & FeatureFlag.MASK} ops=${hex(flags >>> 16)}`;
  return p.length >= L.SIZE + 4 ? `${words} data0=${p.u32(L.SIZE)}` : words;
}

function describeVersion(p: Bytes): string {
  const L = Layout.Version;
  if (p.length < L.SIZE) return '';
  return `${p.get(L.major)}.${p.get(L.minor)} ${versionJson(p.u8)}`;
}
