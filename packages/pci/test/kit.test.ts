import { describe, it, expect } from 'vitest';
import {
  ConfigSpace,
  bar,
  registers,
  msi,
  pm,
  pcie,
  vendorSpecific,
  extended,
  layoutCapabilities,
  defineDevice,
  PciDevice,
  DeviceSetupError,
  GuestMemory,
  parseSize,
} from '@vfu/pci';
import { u32 } from '@vfu/stream';
import { Errno } from '@vfu/protocol';
import { memfdCreate } from '@vfu/native';

const regs = (size: number) => registers(size, {}, []);

describe('BARs', () => {
  it('refuses sizes QEMU would abort on, and impossible kinds', () => {
    expect(() => bar('mem32', regs(24))).toThrow(/power of two/);
    expect(() => bar('mem32', regs(8))).toThrow(/minimum is 16/);
    expect(() => bar('io', regs(512))).toThrow(/I\/O BAR/);
    expect(() => bar('io', regs(8), true)).toThrow(/prefetchable/);
    expect(bar('mem64', regs(4096), true).typeBits).toBe(0b1100);
  });
  it('size themselves: all-ones reads back ~(size-1) | type bits; 64-bit upper halves', () => {
    const cs = new ConfigSpace(256);
    cs.setBars([
      bar('mem32', regs(4096)),
      undefined,
      bar('mem64', regs(2 ** 33)),
      undefined,
      bar('io', regs(8)),
    ]);
    const w = (o: number, v: number) =>
      cs.write(o, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24));
    for (const o of [0x10, 0x18, 0x1c, 0x20]) w(o, 0xffffffff);
    expect(cs.u32(0x10)).toBe(0xfffff000);
    expect(cs.u32(0x18)).toBe(0x4);
    expect(cs.u32(0x1c)).toBe(0xfffffffe);
    expect(cs.u32(0x20)).toBe(0xfffffff9);
    w(0x10, 0xfe001234);
    expect(cs.barAddress(0)).toBe(0xfe001000);
  });
});

describe('capabilities', () => {
  it('chains PM, MSI, PCIe and vendor capabilities from 0x40 and extended ones from 0x100', () => {
    const cs = new ConfigSpace(4096);
    const l = layoutCapabilities(cs, [
      pm(),
      msi({ vectors: 4, perVectorMask: true }),
      pcie(),
      vendorSpecific(Uint8Array.of(1, 2)),
      extended(0x0b, new Uint8Array(8)),
    ]);
    const ids: number[] = [];
    for (let p = cs.u8(0x34); p; p = cs.u8(p + 1)) ids.push(cs.u8(p));
    expect(ids).toEqual([0x01, 0x05, 0x10, 0x09]);
    expect(cs.u16(0x06) & 0x10).toBe(0x10);
    expect(l.msiVectors).toBe(4);
    expect(cs.u32(0x100) & 0xffff).toBe(0x0b);
    expect(() =>
      layoutCapabilities(new ConfigSpace(256), [extended(1, new Uint8Array(4))]),
    ).toThrow(/4096-byte/);
  });
});

describe('register maps', () => {
  it('dispatches by offset and width; unimplemented offsets read 0, ignore writes', () => {
    const s = { v: 0, wide: 0 };
    const r = registers(64, s, [
      {
        offset: 0,
        width: 4,
        read: x => x.v,
        write: (x, v) => {
          x.v = Number(v);
        },
      },
      {
        offset: 8,
        width: 8,
        read: x => x.wide,
        write: (x, v) => {
          x.wide = Number(v);
        },
      },
      { offset: 8, width: 4, read: x => x.wide % 2 ** 32 },
    ]);
    r.write(0, Uint8Array.of(1, 2, 3, 4));
    expect(s.v).toBe(0x04030201);
    r.write(8, Uint8Array.of(1, 0, 0, 0, 1, 0, 0, 0));
    expect(s.wide).toBe(2 ** 32 + 1);
    const out = new Uint8Array(4);
    r.read(8, out);
    expect([...out]).toEqual([1, 0, 0, 0]);
    r.read(40, out);
    expect([...out]).toEqual([0, 0, 0, 0]);
    r.write(40, Uint8Array.of(9, 9, 9, 9));
    // 17 bytes at 0 are no access to the 1-byte slot at 1 (offset * 16 + width collide there).
    const one = { b: 0 };
    const byte = registers(64, one, [
      { offset: 1, width: 1, read: x => x.b, write: (x, v) => (x.b = Number(v)) },
    ]);
    const wide = new Uint8Array(17).fill(0xee);
    byte.read(0, wide);
    expect(wide.every(b => b === 0)).toBe(true);
    byte.write(0, new Uint8Array(17).fill(7));
    expect(one.b).toBe(0);
  });

  it('writeValue does what write does with the same little-endian bytes', () => {
    const map = (partial: boolean) => {
      const s = { w: 0, h: 0, b: 0, ro: 5 };
      const r = registers(
        32,
        s,
        [
          { offset: 0, width: 4, read: x => x.w, write: (x, v) => (x.w = Number(v)) },
          { offset: 4, width: 2, read: x => x.h, write: (x, v) => (x.h = Number(v)) },
          { offset: 6, width: 1, read: x => x.b, write: (x, v) => (x.b = Number(v)) },
          { offset: 8, width: 4, read: x => x.ro },
        ],
        { partial },
      );
      return { s, r };
    };
    const accesses: [number, 1 | 2 | 4, number][] = [
      [0, 4, 0xfedcba98], // a whole register
      [4, 2, 0xbeef],
      [6, 1, 0x7f],
      [8, 4, 0x11111111], // read-only: ignored
      [1, 1, 0xaa], // a byte inside the 4-byte register (partial only)
      [2, 2, 0x1234], // two bytes inside it (partial only)
      [12, 4, 0x22222222], // nothing there
    ];
    for (const partial of [false, true]) {
      const byValue = map(partial),
        byBytes = map(partial);
      for (const [offset, width, value] of accesses) {
        byValue.r.writeValue!(offset, width, value);
        const bytes = new Uint8Array(width);
        for (let i = 0; i < width; i++) bytes[i] = (value >>> (8 * i)) & 0xff;
        byBytes.r.write(offset, bytes);
        expect(byValue.s, `${partial ? 'partial' : 'whole'} ${width}@${offset}`).toEqual(byBytes.s);
      }
    }
  });
});

describe('devices', () => {
  const def = defineDevice({
    id: 't',
    version: 1,
    description: '',
    pci: { vendor: 1, device: 2, classCode: 0, pin: 1 },
    state: { n: u32 },
    options: { size: { description: '', default: '4K' } },
    bars: (_d, o) => ({ 0: bar('mem32', regs(parseSize(o.size))) }),
  });
  it('takes declared options and refuses unknown ones', () => {
    expect(new PciDevice(def, { size: '8K' }).bars[0]!.size).toBe(8192);
    expect(() => new PciDevice(def, { nope: '1' })).toThrow(DeviceSetupError);
    expect(() => new PciDevice(def, { size: '12K' })).toThrow(/power of two/);
  });
  it('defers device work while stopped and runs it on resume; reset zeroes declared state', () => {
    const d = new PciDevice(def);
    const ran: number[] = [];
    d.setRunning(false);
    d.context.whenRunning(() => {
      ran.push(1);
    });
    expect(ran).toEqual([]);
    d.setRunning(true);
    expect(ran).toEqual([1]);
    d.state.n = 5;
    d.reset();
    expect(d.state.n).toBe(0);
  });
  it('io: a stop waits for I/O under way; I/O asked for while stopped starts on run', async () => {
    const d = new PciDevice(def);
    const started: string[] = [];
    const finish: (() => void)[] = [];
    const op = (name: string) => () => {
      started.push(name);
      return new Promise<string>(done => finish.push(() => done(name)));
    };
    const first = d.context.io(op('under way'));
    expect(d.quiescing()).toBeNull(); // running: nothing to wait for
    d.setRunning(false);
    const quiet = d.quiescing();
    expect(quiet).not.toBeNull();
    let quietNow = false;
    void quiet!.then(() => {
      quietNow = true;
    });
    const second = d.context.io(op('asked while stopped'));
    await Promise.resolve();
    expect(started).toEqual(['under way']); // the stopped device starts nothing
    expect(quietNow).toBe(false);
    finish[0]();
    expect(await first).toBe('under way');
    await quiet;
    expect(quietNow).toBe(true);
    expect(d.quiescing()).toBeNull();
    d.setRunning(true);
    expect(started).toEqual(['under way', 'asked while stopped']);
    finish[1]();
    expect(await second).toBe('asked while stopped');
    d.setRunning(false);
    void d.context.io(op('dropped by reset'));
    d.reset();
    d.setRunning(true);
    expect(started).toHaveLength(2); // asked for by the state the reset replaced
  });
  it('refuses DMA while stopped (EBUSY) and without bus mastering (EPERM)', async () => {
    const d = new PciDevice(def);
    const fd = memfdCreate('kit-dma', 0x1000);
    d.guest.map({ argsz: 32, flags: 3, offset: 0, address: 0x1000, size: 0x1000 }, fd);
    const dma = d.context.dma;
    // Refused by a rejection, never a throw: a device that chains .catch() sees it too.
    const refused = (f: () => Promise<unknown>, errno: number) =>
      expect(f()).rejects.toMatchObject({ errno });
    await refused(() => dma.read(0x1000, 4), Errno.EPERM);
    d.config.write(4, Uint8Array.of(6, 0)); // memory + bus master
    await dma.write(0x1000, Uint8Array.of(1, 2, 3, 4));
    d.setRunning(false);
    await refused(() => dma.read(0x1000, 4), Errno.EBUSY);
    await refused(() => dma.write(0x1000, Uint8Array.of(9)), Errno.EBUSY);
    // view() is synchronous: it throws.
    expect(() => dma.view(0x1000, 4, true)).toThrow(
      expect.objectContaining({ errno: Errno.EBUSY }),
    );
    d.setRunning(true);
    expect([...(await dma.read(0x1000, 4))]).toEqual([1, 2, 3, 4]); // nothing written meanwhile
    d.guest.unmapAll();
  });
});

describe('guest memory', () => {
  it('checks mappings and refuses DMA outside them', async () => {
    const g = new GuestMemory({ maxMaps: 2, pageSize: 4096, maxMapSize: 2 ** 30 });
    const map = (flags: number, address: number, size: number) => () =>
      g.map({ argsz: 32, flags, offset: 0, address, size });
    const refused = (errno: number) => expect.objectContaining({ name: 'PciError', errno });
    expect(map(3, 0x1000, 0x1000)).not.toThrow();
    expect(map(3, 0x1000, 0x1000)).not.toThrow(); // the same again
    expect(map(3, 0x1800, 0x1000)).toThrow(refused(Errno.EINVAL)); // overlaps
    expect(map(3, 0x10000, 2 ** 31)).toThrow(refused(Errno.ENOSPC));
    expect(map(1, 0x3000, 0x1000)).not.toThrow();
    expect(map(3, 0x5000, 0x1000)).toThrow(refused(Errno.EINVAL)); // too many
    await expect(g.read(0x8000, 4)).rejects.toMatchObject({ errno: Errno.ENOENT });
    await expect(g.write(0x3000, Uint8Array.of(1))).rejects.toMatchObject({ errno: Errno.EPERM });
    expect(() => g.unmap(0x1000, 0x800)).toThrow(refused(Errno.ENOENT));
  });
});

describe('expansion ROM', () => {
  it('is region 6 and sizes itself through config offset 0x30', () => {
    const rom = new Uint8Array(4096).fill(0xaa);
    rom[0] = 0x55;
    const d = new PciDevice(
      defineDevice({
        id: 'r',
        version: 1,
        description: '',
        pci: { vendor: 1, device: 2, classCode: 0 },
        state: {},
        bars: () => ({}),
        rom: () => rom,
      }),
    );
    const out = new Uint8Array(2);
    d.region(6)!.read(0, out);
    expect([...out]).toEqual([0x55, 0xaa]);
    d.config.write(0x30, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
    expect(d.config.u32(0x30)).toBe(0xfffff001);
    expect(
      () =>
        new PciDevice(
          defineDevice({
            id: 'r',
            version: 1,
            description: '',
            pci: { vendor: 1, device: 2, classCode: 0 },
            state: {},
            bars: () => ({}),
            rom: () => new Uint8Array(3000),
          }),
        ),
    ).toThrow(/power of two/);
  });
});
