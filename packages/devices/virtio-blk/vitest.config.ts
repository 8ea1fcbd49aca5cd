import { vfuVitest } from '../../../vitest.shared.ts';

export default vfuVitest();
