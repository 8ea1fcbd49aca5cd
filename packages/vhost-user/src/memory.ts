// The front-end's memory as the back-end sees it (vhost-user.rst "Memory access"): regions of
// guest physical space, each with the front-end's user address and an fd mapped here. Ring
// addresses arrive as user addresses, buffer addresses as guest physical ones.
import { E, MappedMemory, PAGE_SIZE, type OwnedFd } from '@vfu/native';
import { VhostUserError } from './errors.js';
import type { MemRegion } from './types.js';

interface Mapped extends MemRegion {
  map: MappedMemory;
  /** Where the region starts in `map` (mmap offsets need not be page-aligned). */
  delta: number;
}

const hex = (n: number) => `0x${n.toString(16)}`;
const overlaps = (a: number, an: number, b: number, bn: number) => a < b + bn && b < a + an;

export class MemoryTable {
  #regions: Mapped[] = [];

  constructor(readonly maxRegions: number) {}

  get regions(): readonly MemRegion[] {
    return this.#regions.map(({ guestAddress, size, userAddress, mmapOffset }) => ({
      guestAddress,
      size,
      userAddress,
      mmapOffset,
    }));
  }

  /** SET_MEM_TABLE: replaces the table. Takes the fds (closed once mapped, or on failure). */
  replace(regions: MemRegion[], fds: OwnedFd[]): void {
    try {
      this.#checkTable(regions);
      const mapped: Mapped[] = [];
      try {
        regions.forEach((r, i) => mapped.push(this.#map(r, fds[i])));
      } catch (e) {
        for (const m of mapped) m.map.release();
        throw e;
      }
      this.clear();
      this.#regions = mapped;
    } finally {
      for (const f of fds) f.close();
    }
  }

  /** ADD_MEM_REG: one more region; takes the fd. */
  add(region: MemRegion, fd: OwnedFd): void {
    try {
      if (this.#regions.length >= this.maxRegions)
        throw new VhostUserError(E.ENOSPC, `all ${this.maxRegions} memory slots are in use`);
      this.#checkTable([...this.#regions, region]);
      this.#regions.push(this.#map(region, fd));
    } finally {
      fd.close();
    }
  }

  /** REM_MEM_REG: the region named by guest address, user address and size. */
  remove(region: MemRegion): void {
    const i = this.#regions.findIndex(
      m =>
        m.guestAddress === region.guestAddress &&
        m.userAddress === region.userAddress &&
        m.size === region.size,
    );
    if (i < 0)
      throw new VhostUserError(
        E.ENOENT,
        `no memory region at guest ${hex(region.guestAddress)} size ${hex(region.size)}`,
      );
    this.#regions[i].map.release();
    this.#regions.splice(i, 1);
  }

  clear(): void {
    for (const m of this.#regions) m.map.release();
    this.#regions = [];
  }

  #checkTable(regions: MemRegion[]): void {
    if (regions.length > this.maxRegions)
      throw new VhostUserError(E.ENOSPC, `${regions.length} regions, at most ${this.maxRegions}`);
    for (let i = 0; i < regions.length; i++)
      for (let j = 0; j < i; j++) {
        const a = regions[i];
        const b = regions[j];
        if (overlaps(a.guestAddress, a.size, b.guestAddress, b.size))
          throw new VhostUserError(
            E.EEXIST,
            `memory region at guest ${hex(a.guestAddress)} overlaps one at ${hex(b.guestAddress)}`,
          );
        if (overlaps(a.userAddress, a.size, b.userAddress, b.size))
          throw new VhostUserError(
            E.EEXIST,
            `memory region at user ${hex(a.userAddress)} overlaps one at ${hex(b.userAddress)}`,
          );
      }
  }

  #map(r: MemRegion, fd: OwnedFd | undefined): Mapped {
    if (!fd) throw new VhostUserError(E.EBADF, 'a memory region came without its fd');
    const start = r.mmapOffset - (r.mmapOffset % PAGE_SIZE);
    const delta = r.mmapOffset - start;
    try {
      return { ...r, map: MappedMemory.map(fd.fd, start, r.size + delta), delta };
    } catch (e) {
      throw new VhostUserError(
        E.EFAULT,
        `cannot map region guest ${hex(r.guestAddress)} size ${hex(r.size)} at offset ` +
          `${hex(r.mmapOffset)}: ${(e as Error).message}`,
      );
    }
  }

  /** [address, +len) of guest physical memory as a live view; throws if not inside one region. */
  view(address: number, len: number): Uint8Array {
    const m = this.#regions.find(
      x => address >= x.guestAddress && address < x.guestAddress + x.size,
    );
    if (!m || len < 0 || address + len > m.guestAddress + m.size)
      throw new VhostUserError(
        E.EFAULT,
        `guest memory [${hex(address)}, +${len}) is not inside one memory region`,
      );
    return m.map.bytes(m.delta + address - m.guestAddress, len);
  }

  /** The guest physical address of a front-end user address (a ring address). */
  guestAddressOf(userAddress: number): number {
    const m = this.#regions.find(
      x => userAddress >= x.userAddress && userAddress < x.userAddress + x.size,
    );
    if (!m)
      throw new VhostUserError(E.EFAULT, `user address ${hex(userAddress)} is in no memory region`);
    return m.guestAddress + (userAddress - m.userAddress);
  }
}
