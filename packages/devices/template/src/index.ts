// The smallest useful device: one BAR of registers and one interrupt. Copy this folder to start
// a new model (see README.md). Everything below is declaration; the kit does the protocol.
import { defineDevice, registers, bar, msi, u32, type DeviceContext, type Schema } from '@vfu/pci';

/** Register offsets in BAR 0. */
export const Reg = {
  ID: 0x00,
  SCRATCH: 0x04,
  DOORBELL: 0x08,
  IRQ_STATUS: 0x0c,
  RINGS: 0x10,
} as const;
export const TEMPLATE_ID = 0x7e3a0001;

// Everything that must survive a migration lives here; the kit saves and loads it. That includes
// work the device still owes: a doorbell rung while the device is stopped is counted in
// `doorbells` until it is served (a closure waiting in whenRunning cannot migrate).
const state = { scratch: u32, irqStatus: u32, rings: u32, doorbells: u32 } satisfies Schema;
type Dev = DeviceContext<typeof state>;

/** Serves one doorbell rung earlier, if one is still owed. */
function serveDoorbell(dev: Dev): void {
  const s = dev.state;
  if (!s.doorbells) return;
  s.doorbells--;
  s.rings++;
  s.irqStatus |= 1;
  dev.irq.raise();
}

export default defineDevice({
  id: 'template',
  version: 2,
  description: 'a register file with a doorbell that raises an interrupt',
  pci: { vendor: 0x1b36, device: 0x0101, classCode: 0xff0000, revision: 1, pin: 1 },
  capabilities: () => [msi({ vectors: 1 })],
  state,
  // A migrated-in device owes the doorbells its source had not served: queue them again.
  afterLoad: dev => {
    for (let i = 0; i < dev.state.doorbells; i++) dev.whenRunning(() => serveDoorbell(dev));
  },
  bars: dev => ({
    0: bar(
      'mem32',
      registers(4096, dev.state, [
        { offset: Reg.ID, width: 4, read: () => TEMPLATE_ID },
        {
          offset: Reg.SCRATCH,
          width: 4,
          read: s => s.scratch,
          write: (s, v) => {
            s.scratch = Number(v);
          },
        },
        // Ringing the doorbell is device work: it waits while the device is stopped.
        {
          offset: Reg.DOORBELL,
          width: 4,
          write: s => {
            s.doorbells++;
            dev.whenRunning(() => serveDoorbell(dev));
          },
        },
        // Write 1 to clear; the line drops when nothing is pending.
        {
          offset: Reg.IRQ_STATUS,
          width: 4,
          read: s => s.irqStatus,
          write: (s, v) => {
            s.irqStatus &= ~Number(v);
            if (!s.irqStatus) dev.irq.lower();
          },
        },
        { offset: Reg.RINGS, width: 4, read: s => s.rings },
      ]),
    ),
  }),
});
