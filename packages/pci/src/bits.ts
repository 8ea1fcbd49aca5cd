/** Whether n is a positive power of two (BAR sizes, page sizes). */
export const isPow2 = (n: number) => n > 0 && Number.isInteger(Math.log2(n));
