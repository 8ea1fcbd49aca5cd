#!/usr/bin/env node
import { main } from '../dist/index.js';
main().then(code => {
  process.exitCode = code;
});
