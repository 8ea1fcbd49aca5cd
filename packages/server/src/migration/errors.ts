// The one error a migration step throws: the errno the client gets, and why.
export class MigrationError extends Error {
  override readonly name = 'MigrationError';
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}
