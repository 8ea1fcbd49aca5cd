import { vfuVitest } from '../../tools/vitest/shared.ts';

export default vfuVitest();
