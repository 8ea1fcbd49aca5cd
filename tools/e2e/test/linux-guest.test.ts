// A real Linux guest (Debian's kernel) drives our devices with Linux's own drivers:
// gpio-pci-idio-16 for the gpio card, uio_pci_generic for edu. Booted under TCG.
import { describe, it, expect } from 'vitest';
import { startServer, bootGuest } from '@vfu/qemu-harness';
import { tempDir, control } from './helpers.ts';

describe('a Linux guest with its own drivers', () => {
  // gpio: outputs set, inputs changed on the device read, their interrupt handled.
  // edu through uio_pci_generic: id, factorial, DMA, interrupt.
  it('gpio-pci-idio-16 and uio_pci_generic drive our gpio card and edu', async () => {
    const tmp = tempDir();
    const gpio = await startServer(tmp.path('gpio.sock'), [
      '--device',
      'gpio-idio16',
      '--control',
      tmp.path('gpio.ctl'),
    ]);
    const edu = await startServer(tmp.path('edu.sock'), ['--device', 'edu']);
    let outputs = -1;
    try {
      const run = await bootGuest(
        [
          { socket: gpio.socket, addr: '4.0' },
          { socket: edu.socket, addr: '5.0' },
        ],
        async what => {
          if (what === 'outputs')
            outputs = (await control(tmp.path('gpio.ctl'), { get: 'state' })).state.outputs;
          if (what === 'inputs')
            await control(tmp.path('gpio.ctl'), { set: 'inputs', value: 1 << 3 });
        },
      );
      const v = (k: string) => run.lines.get(k);
      console.log(
        `guest booted under ${run.accel}${run.notes.length ? ` (${run.notes.join('; ')})` : ''}`,
      );
      if (process.env.VFU_SHOW_GUEST) console.log(run.console);
      try {
        expect(v('done'), 'the guest ran to the end').toBeDefined();
        expect(v('gpio-ids')).toEqual(['0x494f', '0x0dc8']);
        expect(v('gpio-driver')).toEqual(['pci-idio-16']);
        expect(v('gpio-chip')).toEqual(['32']);
        expect(outputs).toBe(0b100001); // OUT0 and OUT5 set by the guest
        // an input changed on the device side, read by the guest
        expect(v('gpio-iin3')).toEqual(['1']);
        const [before, after] = v('gpio-irqs')!.map(Number);
        expect(after).toBeGreaterThan(before); // the driver handled the input-change interrupt
        expect(v('edu-driver')).toEqual(['uio_pci_generic']);
        expect(v('edu-id')).toEqual(['0x010000ED']);
        expect(v('edu-factorial')).toEqual(['0x00000078']);
        expect(v('edu-dma')).toEqual(['0x1BADCAFE', '0x600DBEEF']);
        const [b2, a2] = v('edu-irqs')!.map(Number);
        expect(a2).toBeGreaterThan(b2);
      } catch (e) {
        console.error(run.console.slice(-6000));
        throw e;
      }
    } finally {
      await gpio.stop();
      await edu.stop();
      tmp.cleanup();
    }
  }, 120_000);
});
