/** A migration failed for a reason the driver names (not a device's error reply). */
export class MigrationFailure extends Error {}
