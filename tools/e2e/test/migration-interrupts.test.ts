// Interrupt state across a live migration between two real server processes, driven by
// vfu-migrate over v2 and v1: an asserted INTx line is signalled on the destination's eventfd,
// and an MSI-X vector left pending under its mask fires there once the guest unmasks it.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { startServer, type ServerProcess } from '@vfu/qemu-harness';
import { VfioUserClient } from '@vfu/client';
import { migrate } from '@vfu/vfu-migrate';
import { Irq, Region } from '@vfu/protocol';
import { tempDir, writeModel } from './helpers.ts';

const tmp = tempDir('vfu-migirq-');
const LIMIT = 300_000; // a busy machine is slow; the test is about what happens, not when
afterAll(() => tmp.cleanup());

// A model that raises the interrupt written to BAR 0 offset 0 (INTx, or that MSI-X vector once
// MSI-X is on): its file sees @vfu/pci as an installed package would (a link to the workspace's).
const MODEL = `import { defineDevice, bar, registers, msix, u32 } from '@vfu/pci';
export default defineDevice({
  id: 'raiser',
  version: 1,
  description: 'raises the interrupt it is told to',
  pci: { vendor: 0x1b36, device: 0x01fd, classCode: 0xff0000, pin: 1 },
  capabilities: () => [msix({ vectors: 3, bar: 1 })],
  state: { raised: u32 },
  bars: dev => ({
    0: bar('mem32', registers(4096, dev.state, [
      { offset: 0, width: 4, read: s => s.raised,
        write: (s, v) => { s.raised++; dev.irq.raise(Number(v)); } },
    ])),
  }),
});
`;
let model = '';
beforeAll(() => {
  model = writeModel(tmp.dir, 'raiser.mjs', MODEL);
});

const servers: ServerProcess[] = [];
const clients: VfioUserClient[] = [];
afterEach(async () => {
  clients.splice(0).forEach(c => c.close());
  await Promise.all(servers.splice(0).map(s => s.stop()));
});

let n = 0;
async function pair(): Promise<[VfioUserClient, VfioUserClient]> {
  n++;
  const opts = ['--device', model, '--on-disconnect', 'keep'];
  const a = await startServer(tmp.path(`src${n}.sock`), opts);
  const b = await startServer(tmp.path(`dst${n}.sock`), opts);
  servers.push(a, b);
  const ca = await VfioUserClient.connect(a.socket),
    cb = await VfioUserClient.connect(b.socket);
  clients.push(ca, cb);
  return [ca, cb];
}

const STATUS = 0x06,
  STATUS_INTERRUPT = 0x08,
  CAP_PTR = 0x34,
  MSIX_BAR = 1, // the MSI-X table at offset 0 of BAR 1, the PBA on the next page
  PBA = 4096;

/** Config offset of the MSI-X capability, found as a driver finds it (the capability list). */
async function msixCap(c: VfioUserClient): Promise<number> {
  for (let at = await c.read8(Region.CONFIG, CAP_PTR); at; ) {
    if ((await c.read8(Region.CONFIG, at)) === 0x11) return at;
    at = await c.read8(Region.CONFIG, at + 1);
  }
  throw new Error('no MSI-X capability');
}

describe.each(['v2', 'v1'] as const)('interrupt state migrates over %s', protocol => {
  it('an asserted INTx is signalled on the eventfd the destination client sets up', {
    timeout: LIMIT,
  }, async () => {
    const [src, dst] = await pair();
    await src.write32(Region.BAR0, 0, 0);
    expect((await src.read16(Region.CONFIG, STATUS)) & STATUS_INTERRUPT).toBe(STATUS_INTERRUPT);
    const rep = await migrate(src, dst, { protocol });
    expect(rep.outcome, rep.error).toBe('completed');
    expect((await dst.read16(Region.CONFIG, STATUS)) & STATUS_INTERRUPT).toBe(STATUS_INTERRUPT);
    const irq = await dst.bindIrqs(Irq.INTX);
    await irq.next(0, LIMIT);
    expect(irq.counts[0]).toBe(1);
  });

  it('a pending MSI-X vector fires at the destination when the guest unmasks it', {
    timeout: LIMIT,
  }, async () => {
    const [src, dst] = await pair();
    const cap = await msixCap(src);
    await src.write16(Region.CONFIG, cap + 2, (await src.read16(Region.CONFIG, cap + 2)) | 0x8000);
    await src.write32(MSIX_BAR, 16 * 2, 0xfee01000); // vector 2: address and data
    await src.write32(MSIX_BAR, 16 * 2 + 8, 0x4022);
    await src.write32(MSIX_BAR, 16 * 2 + 12, 1); // masked by the guest
    await src.write32(MSIX_BAR, 16 * 0 + 12, 0); // vector 0 unmasked
    await src.write32(Region.BAR0, 0, 2);
    expect(await src.read8(MSIX_BAR, PBA)).toBe(0b100);
    const rep = await migrate(src, dst, { protocol });
    expect(rep.outcome, rep.error).toBe('completed');
    expect(await dst.read32(Region.BAR0, 0)).toBe(1);
    expect(await dst.read8(MSIX_BAR, PBA)).toBe(0b100);
    expect(await dst.read32(MSIX_BAR, 16 * 2)).toBe(0xfee01000);
    expect(await dst.read32(MSIX_BAR, 16 * 2 + 8)).toBe(0x4022);
    const irq = await dst.bindIrqs(Irq.MSIX, 3);
    await dst.write32(MSIX_BAR, 16 * 2 + 12, 0); // the guest unmasks it at the destination
    await irq.next(2, LIMIT);
    expect(await dst.read8(MSIX_BAR, PBA)).toBe(0);
    await dst.write32(Region.BAR0, 0, 0); // vector 0 stayed unmasked
    await irq.next(0, LIMIT);
    expect(irq.counts[1]).toBe(0);
  });
});
