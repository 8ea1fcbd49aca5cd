// ACCES PCI-IDIO-16 (16 FET outputs, 16 isolated inputs, change-of-state interrupt) as Linux's
// gpio-pci-idio-16 driver expects it: registers in I/O BAR 2, INTx on pin A.
import {
  defineDevice,
  registers,
  bar,
  type DeviceContext,
  u8,
  u16,
  bool,
  type Schema,
} from '@vfu/pci';

export const Reg = {
  OUT0_7: 0,
  IN0_7: 1,
  IRQ_CTL: 2,
  FILTER_CTL: 3,
  OUT8_15: 4,
  IN8_15: 5,
  IRQ_STATUS: 6,
} as const;

/**
 * IRQ status: bit 0 inputs 0-7 changed, bit 1 inputs 8-15 changed, bit 2 interrupt pending (Linux
 * checks both).
 */
export const IRQ_LOW = 0x1,
  IRQ_HIGH = 0x2,
  IRQ_PENDING = 0x4;
const state = {
  outputs: u16,
  inputs: u16,
  irqEnabled: bool,
  irqStatus: u8,
  filters: bool,
  // Input bits whose change the device has yet to report (changed while it was stopped): kept
  // in the state so that a migration carries the interrupt the card owes.
  unreported: u16,
} satisfies Schema;
type Dev = DeviceContext<typeof state>;

/** Changes the inputs as the outside world would; an enabled interrupt fires on any change. */
export function setInputs(dev: Dev, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff)
    throw new RangeError(`inputs takes 16 bits, 0 to 65535 (0xffff); got ${value}`);
  const s = dev.state;
  const changed = (s.inputs ^ value) & 0xffff;
  s.inputs = value & 0xffff;
  if (changed && s.irqEnabled) {
    s.unreported |= changed;
    dev.whenRunning(() => reportChange(dev));
  }
}

/** Interrupts for the input changes not yet reported (nothing if they were already). */
function reportChange(dev: Dev): void {
  const s = dev.state;
  const changed = s.unreported;
  if (!changed) return;
  s.unreported = 0;
  s.irqStatus |= IRQ_PENDING | (changed & 0xff ? IRQ_LOW : 0) | (changed & 0xff00 ? IRQ_HIGH : 0);
  dev.irq.raise();
}

export default defineDevice({
  id: 'gpio-idio16',
  version: 2,
  description: 'ACCES PCI-IDIO-16 digital I/O card (Linux: gpio-pci-idio-16)',
  pci: {
    vendor: 0x494f,
    device: 0x0dc8,
    subsystemVendor: 0x494f,
    subsystem: 0x0dc8,
    classCode: 0xff0000,
    pin: 1,
  },
  state,
  controls: { inputs: setInputs },
  // A change the source had not reported yet is reported here once the device runs.
  afterLoad: dev => {
    if (dev.state.unreported) dev.whenRunning(() => reportChange(dev));
  },
  bars: dev => ({
    // BAR 2 as on the real card (the driver maps BAR 2); 8 bytes of registers.
    2: bar(
      'io',
      registers(8, dev.state, [
        {
          offset: Reg.OUT0_7,
          width: 1,
          read: s => s.outputs & 0xff,
          write: (s, v) => {
            s.outputs = (s.outputs & 0xff00) | Number(v);
          },
        },
        {
          offset: Reg.OUT8_15,
          width: 1,
          read: s => s.outputs >> 8,
          write: (s, v) => {
            s.outputs = (s.outputs & 0xff) | (Number(v) << 8);
          },
        },
        {
          offset: Reg.IN0_7,
          width: 1,
          read: s => s.inputs & 0xff,
          write: s => {
            s.irqStatus = 0;
            dev.irq.lower();
          },
        }, // clears the interrupt
        { offset: Reg.IN8_15, width: 1, read: s => s.inputs >> 8 },
        // Reading enables the interrupt, writing disables it (the card's odd but documented
        // interface).
        {
          offset: Reg.IRQ_CTL,
          width: 1,
          read: s => {
            s.irqEnabled = true;
            return 0;
          },
          write: s => {
            s.irqEnabled = false;
          },
        },
        {
          offset: Reg.FILTER_CTL,
          width: 1,
          read: s => {
            s.filters = true;
            return 0;
          },
          write: s => {
            s.filters = false;
          },
        },
        { offset: Reg.IRQ_STATUS, width: 1, read: s => s.irqStatus },
      ]),
    ),
  }),
});
