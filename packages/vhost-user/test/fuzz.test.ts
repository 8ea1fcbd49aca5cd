// fuzz: random messages from a front-end to a live back-end session over a real socketpair.
// Each carries NEED_REPLY, so each gets exactly one answer (a body, an empty body or an ack);
// the session must answer every one, keep serving, and leak no fd.
import { expect, it } from 'vitest';
import { eventfdCreate, openFdCount } from '@vfu/native';
import { Flag, HEADER_SIZE, Request, frame } from '@vfu/vhost-user';
import { rig } from './helpers.js';

function xorshift(seed: number) {
  let x = seed || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

it('fuzz: random messages each get one answer and the session goes on', async () => {
  const before = openFdCount();
  const r = rig();
  const efds = [eventfdCreate(), eventfdCreate()];
  const rand = xorshift(0x5eed);
  const runs = Number(process.env.VFU_FUZZ_SESSIONS ?? 400);
  for (let i = 0; i < runs; i++) {
    const request = rand(46);
    const size = [0, 8, 12, 16, 20, 24, 40, 72, rand(300)][rand(9)];
    const { msg } = frame(request, Flag.VERSION | Flag.NEED_REPLY, size);
    for (let b = HEADER_SIZE; b < msg.length; b++) msg[b] = rand(4) === 0 ? rand(256) : 0;
    const fds = efds.slice(0, rand(3)).map(f => f.fd);
    const answer = await r.fe.raw(msg, fds);
    expect(answer.header.request).toBe(request);
    expect(answer.header.flags & Flag.REPLY).toBe(Flag.REPLY);
    for (const f of answer.fds) f.close();
  }
  const f = await r.fe.request({ request: Request.GET_QUEUE_NUM });
  expect(f.payload[0]).toBe(2);
  for (const e of efds) e.close();
  r.close();
  await r.be.closed;
  expect(openFdCount()).toBe(before);
});
