/**
 * What the server library logs through: four levels, one message each. A pino logger fits it as
 * it is; `silentLogger` drops everything. Levels: error (the server cannot do what it should),
 * warn (a refusal or a client/guest error worth an operator's eye), info (lifecycle and
 * migration steps), debug (details: negotiation, every feature request).
 */
export interface Logger {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

const drop = () => {};
export const silentLogger: Logger = { error: drop, warn: drop, info: drop, debug: drop };
