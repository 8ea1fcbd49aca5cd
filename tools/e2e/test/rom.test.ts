// An expansion ROM over a real socket: region 6 is read-only, sized, and serves its bytes.
import { it, expect } from 'vitest';
import { VfioUserServer } from '@vfu/server';
import { PciDevice, defineDevice, bar, registers } from '@vfu/pci';
import { VfioUserClient } from '@vfu/client';
import { RegionFlag } from '@vfu/protocol';
import { tempDir } from './helpers.ts';

it('region 6 is a read-only ROM of its size with its bytes; 0x30 sizes it', async () => {
  const tmp = tempDir();
  const rom = new Uint8Array(8192).map((_, i) => i & 0xff);
  rom[0] = 0x55;
  rom[1] = 0xaa;
  const device = new PciDevice(
    defineDevice({
      id: 'rom',
      version: 1,
      description: '',
      pci: { vendor: 0x1b36, device: 0x0102, classCode: 0xff0000 },
      state: {},
      bars: () => ({ 0: bar('mem32', registers(4096, {}, [])) }),
      rom: () => rom,
    }),
  );
  const server = new VfioUserServer({ device, socketPath: tmp.path('rom.sock') }).listen();
  const c = await VfioUserClient.connect(tmp.path('rom.sock'));
  try {
    expect(await c.regionInfo(6)).toMatchObject({ size: 8192, flags: RegionFlag.READ });
    expect([...(await c.regionRead(6, 0, 4))]).toEqual([0x55, 0xaa, 2, 3]);
    expect((await c.regionRead(6, 8188, 4))[3]).toBe(0xff);
    await c.config.write32(0x30, 0xffffffff);
    expect((await c.config.read32(0x30)) >>> 0).toBe(0xffffe001);
  } finally {
    c.close();
    server.close();
    device.release();
    tmp.cleanup();
  }
});
