#!/usr/bin/env node
import { main } from '../dist/main.js';
// Exits as soon as the command is done: nothing left open (a half-connected peer) can keep it.
main(process.argv.slice(2)).then(
  code => process.exit(code),
  e => {
    process.stderr.write(`vfu-migrate: ${e?.stack ?? e}\n`);
    process.exit(1);
  },
);
