// The command's logger: pino (levels, child loggers, ISO timestamps and JSON for free, and a
// synchronous destination, so nothing is lost when a signal ends the process). Text lines are
// pino's records reformatted, which spares a pretty-printer dependency.
import { writeSync } from 'node:fs';
import { pino, type Logger as Pino, type DestinationStream } from 'pino';

export const LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type Level = (typeof LEVELS)[number];
export const FORMATS = ['text', 'json'] as const;
export type Format = (typeof FORMATS)[number];

/** `2026-01-02T03:04:05.678Z WARN  message`, one line per record, on `fd`. */
function textLines(fd: number): DestinationStream {
  return {
    write(record: string) {
      const r = JSON.parse(record) as { time: string; level: string; msg: string };
      writeSync(fd, `${r.time} ${r.level.toUpperCase().padEnd(5)} ${r.msg}\n`);
    },
  };
}

/** A logger at `level` writing `format` records to `fd` (stderr by default). */
export function createLogger(level: Level, format: Format, fd = 2): Pino {
  const destination = format === 'json' ? pino.destination({ fd, sync: true }) : textLines(fd);
  return pino(
    {
      level,
      base: undefined, // no pid or hostname in every record
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: label => ({ level: label }) },
    },
    destination,
  );
}

/** A child that logs every record (for --trace), whatever the parent's level. */
export const tracer = (log: Pino) => log.child({ trace: true }, { level: 'trace' });
