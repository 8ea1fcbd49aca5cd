import type { Command, RegionCap } from '@vfu/protocol';
import type { PciDevice, RegionHandler } from '@vfu/pci';
import type { Handler } from '../handlers.js';
import type { Session } from '../session.js';

/** Migration support of a server (filled in by the migration module). */
export class Migration {
  readonly handlers: Partial<Record<Command, Handler>> = {};
  readonly extraRegions: RegionHandler[] = [];
  readonly regionCaps = new Map<number, RegionCap[]>();
  readonly advertised = false;
  constructor(readonly device: PciDevice, readonly opts: { v1Region: boolean; log: (m: string) => void }) {}
  attach(_s: Session): void {}
  detach(): void {}
  onDeviceReset(_reason: string): void {}
}
