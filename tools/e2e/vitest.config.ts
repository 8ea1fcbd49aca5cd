import { vfuVitest } from '../../vitest.shared.ts';

export default vfuVitest({ testTimeout: 60_000 });
