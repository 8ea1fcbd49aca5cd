// Capability-list builder: standard capabilities from 0x40, extended ones from 0x100 (PCIe).
import { Cfg, MsiControl, MsixControl, Status, type ConfigSpace } from './config-space.js';

export type Capability =
  | { kind: 'pm' }
  | { kind: 'msi'; vectors: 1 | 2 | 4 | 8 | 16 | 32; perVectorMask?: boolean }
  | { kind: 'msix'; vectors: number; bar: number; tableOffset: number; pbaOffset: number }
  | { kind: 'pcie'; type?: 'endpoint' | 'integrated' }
  | { kind: 'vendor'; data: Uint8Array }
  | { kind: 'extended'; id: number; version?: number; data: Uint8Array };

export const pm = (): Capability => ({ kind: 'pm' });
export const msi = (o: {
  vectors: 1 | 2 | 4 | 8 | 16 | 32;
  perVectorMask?: boolean;
}): Capability => ({ kind: 'msi', ...o });
export const msix = (o: {
  vectors: number;
  bar: number;
  tableOffset?: number;
  pbaOffset?: number;
}): Capability => ({
  kind: 'msix',
  vectors: o.vectors,
  bar: o.bar,
  tableOffset: o.tableOffset ?? 0,
  pbaOffset: o.pbaOffset ?? Math.ceil((o.vectors * 16) / 4096) * 4096,
});
export const pcie = (type: 'endpoint' | 'integrated' = 'endpoint'): Capability => ({
  kind: 'pcie',
  type,
});
export const vendorSpecific = (data: Uint8Array): Capability => ({ kind: 'vendor', data });
export const extended = (id: number, data: Uint8Array, version = 1): Capability => ({
  kind: 'extended',
  id,
  version,
  data,
});

/** Where each capability landed, for the interrupt logic. */
export interface CapabilityLayout {
  msi?: number;
  msix?: number;
  pcie?: number;
  pm?: number;
  msiVectors: number;
  msiMasking: boolean;
}

const SIZE = { pm: 8, msi: 0x18, msix: 12, pcie: 0x3c } as const;

export function layoutCapabilities(cs: ConfigSpace, caps: Capability[]): CapabilityLayout {
  const out: CapabilityLayout = { msiVectors: 0, msiMasking: false };
  let prev = Cfg.CAP_PTR,
    at = 0x40;
  const std = caps.filter(c => c.kind !== 'extended');
  if (std.length) cs.set16(Cfg.STATUS, cs.u16(Cfg.STATUS) | Status.CAP_LIST);
  for (const c of std) {
    const len = c.kind === 'vendor' ? 3 + c.data.length : SIZE[c.kind];
    if (at + len > 0x100)
      throw new RangeError('capabilities do not fit in 256 bytes of config space');
    cs.set8(prev, at);
    const start = at;
    switch (c.kind) {
      case 'pm':
        cs.set8(at, 0x01);
        cs.set16(at + 2, 0x0003); // PM 1.2
        cs.writable(at + 4, 2, 0x0103);
        cs.w1c(at + 4, 2, 0x8000);
        out.pm = at;
        break;
      case 'msi': {
        const mmc = Math.log2(c.vectors);
        cs.set8(at, 0x05);
        const masking = c.perVectorMask ? MsiControl.PER_VECTOR_MASK : 0;
        cs.set16(at + 2, (mmc << 1) | MsiControl.ADDRESS_64 | masking);
        cs.writable(at + 2, 2, MsiControl.ENABLE | MsiControl.MULTIPLE_MESSAGE_ENABLE);
        cs.writable(at + 4, 4, 0xfffffffc);
        cs.writable(at + 8, 4);
        cs.writable(at + 0xc, 2);
        if (c.perVectorMask)
          cs.writable(at + 0x10, 4, c.vectors === 32 ? 0xffffffff : (1 << c.vectors) - 1);
        out.msi = at;
        out.msiVectors = c.vectors;
        out.msiMasking = !!c.perVectorMask;
        break;
      }
      case 'msix':
        cs.set8(at, 0x11);
        cs.set16(at + 2, c.vectors - 1);
        cs.set32(at + 4, c.tableOffset | c.bar);
        cs.set32(at + 8, c.pbaOffset | c.bar);
        cs.writable(at + 2, 2, MsixControl.ENABLE | MsixControl.FUNCTION_MASK);
        out.msix = at;
        break;
      case 'pcie':
        cs.set8(at, 0x10);
        cs.set16(at + 2, 0x0002 | ((c.type === 'integrated' ? 9 : 0) << 4)); // v2
        cs.set32(at + 4, 0x00008000 /* role-based error reporting */);
        cs.writable(at + 8, 2, 0x7fff);
        cs.w1c(at + 0xa, 2, 0x000f);
        cs.writable(at + 0x28, 2, 0xffff);
        out.pcie = at;
        break;
      case 'vendor':
        cs.set8(at, 0x09);
        cs.set8(at + 2, 3 + c.data.length);
        cs.bytes.set(c.data, at + 3);
        break;
    }
    prev = start + 1;
    at = (start + len + 3) & ~3;
  }
  const ext = caps.filter(
    (c): c is Extract<Capability, { kind: 'extended' }> => c.kind === 'extended',
  );
  if (ext.length && cs.size !== 4096)
    throw new RangeError('extended capabilities need a 4096-byte (PCIe) config space');
  let eat = 0x100;
  ext.forEach((c, i) => {
    const len = (4 + c.data.length + 3) & ~3;
    const next = i + 1 < ext.length ? eat + len : 0;
    cs.set32(eat, c.id | ((c.version ?? 1) << 16) | (next << 20));
    cs.bytes.set(c.data, eat + 4);
    eat += len;
  });
  return out;
}
