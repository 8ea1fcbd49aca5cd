import { vfuVitest } from '../../vitest.shared.ts';

// Soak runs are long by design: a day's time limit (each run bounds its own waits).
export default vfuVitest({ include: ['soak/**/*.soak.ts'], testTimeout: 24 * 3600_000 });
