// The kit's one error shape: a failure that carries the errno a client should be answered with
// and a message a device author or client author can act on.
import { errnoName } from '@vfu/protocol';

/**
 * A refused device access or DMA: `errno` is what the client is answered, `message` says why.
 * The server turns any PciError into its errno at the handler boundary.
 */
export class PciError extends Error {
  override readonly name: string = 'PciError';
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
  /** The errno's name (EINVAL, EFAULT, ...). */
  get code(): string {
    return errnoName(this.errno);
  }
}

/** A region access the device refuses; thrown by a region's read or write. */
export class RegionAccessError extends PciError {
  override readonly name = 'RegionAccessError';
}

/** Device DMA into guest memory that cannot be done (unmapped, read-only, device stopped). */
export class DmaError extends PciError {
  override readonly name = 'DmaError';
}
