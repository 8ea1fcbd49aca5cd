import { describe, it, expect } from 'vitest';
import {
  SaveSession,
  LoadSession,
  StreamError,
  identityMismatch,
  parseIdentity,
  u32,
  type DeviceImage,
  type DeviceIdentity,
} from '@vfu/stream';
import { testImage } from './test-image.ts';

const schema = { a: u32 };

const image = (identity?: DeviceIdentity): DeviceImage =>
  testImage(schema, { memSize: 8192, identity }).img;

/** The first bytes of a stream: its header record. */
const header = (img: DeviceImage) => Uint8Array.from(new SaveSession(img).read(4096));

describe('device identity in the stream header', () => {
  it('the same identity loads; a different one is refused at the header, naming the fact', () => {
    const small = { BAR2: 'mem64 prefetchable 1 MiB', 'PCI ids': 'vendor 1234' };
    expect(() => new LoadSession(image({ ...small })).write(header(image(small)))).not.toThrow();
    const big = { ...small, BAR2: 'mem64 prefetchable 2 MiB' };
    const l = new LoadSession(image(big));
    expect(() => l.write(header(image(small)))).toThrow(
      new StreamError(
        'not the same dev device: BAR2 is mem64 prefetchable 1 MiB in the stream but ' +
          'mem64 prefetchable 2 MiB on this device',
      ),
    );
  });

  it('a fact present on one side only is a difference', () => {
    expect(identityMismatch({ ROM: '2 KiB' }, {})).toBe(
      'ROM is 2 KiB in the stream but absent on this device',
    );
    expect(identityMismatch({}, { BAR0: 'io 8 B' })).toBe(
      'BAR0 is absent in the stream but io 8 B on this device',
    );
    expect(identityMismatch({ a: 'x', b: 'y' }, { b: 'y', a: 'x' })).toBeNull();
  });

  it('an identity that is not an object of strings is refused', () => {
    expect(parseIdentity('[1]')).toMatch(/not an object/);
    expect(parseIdentity('{"a":1}')).toMatch(/not a string/);
    expect(parseIdentity('{')).toMatch(/not JSON/);
    expect(parseIdentity('{"a":"b"}')).toEqual({ a: 'b' });
  });
});
