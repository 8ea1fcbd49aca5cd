// vfu-migrate's subcommands (send, receive, save, restore, inspect), each in its own file; the
// one-host form (`vfu-migrate --source --destination`) stays in main.ts.
import { say, UsageError, type Describe } from './common.js';
import { receiveCommand } from './receive.js';
import { inspectCommand, restoreCommand, saveCommand } from './snapshot.js';
import { sendCommand } from './send.js';

const commands: Record<string, (argv: string[], describe: Describe) => Promise<number>> = {
  send: sendCommand,
  receive: receiveCommand,
  save: saveCommand,
  restore: restoreCommand,
  inspect: inspectCommand,
};

export const SUBCOMMANDS_USAGE = `
Between hosts and to files (each has --help):
  vfu-migrate receive --destination SOCK --listen [HOST:]PORT   (destination host)
  vfu-migrate send --source SOCK --to HOST:PORT                 (source host)
  vfu-migrate save --source SOCK --file PATH [--resume]
  vfu-migrate restore --destination SOCK --file PATH
  vfu-migrate inspect PATH`;

/** Runs the subcommand `argv[0]` names; null when it names none (the one-host form). */
export async function subcommand(argv: string[], describe: Describe): Promise<number | null> {
  const run = commands[argv[0] ?? ''];
  if (!run) return null;
  try {
    return await run(argv.slice(1), describe);
  } catch (e) {
    if (e instanceof UsageError) {
      say(`${argv[0]}: ${e.message} (vfu-migrate ${argv[0]} --help lists the options)`);
      return 2;
    }
    say(`${argv[0]}: ${(e as Error).message}`);
    return 1;
  }
}
