// An optional control socket (--control PATH) for tests, demos and operators: one JSON object
// per line, one reply per line.
//   {"get": "state"}                  -> {"ok": true, "state": {...declared state...}}
//   {"set": "inputs", "value": 8}     -> {"ok": true}   (a control the device declares)
//   {"get": "migration"}              -> {"ok": true, "migration": {"state": "STOP", ...}}
//   {"get": "client"}                 -> {"ok": true, "connected": false, "sessions": 2}
//   {"do": "resume"}                  -> {"ok": true}   (runs a migrated-away device again)
// A line longer than MAX_LINE characters gets an error and the connection is closed.
import { createServer, type Server } from 'node:net';
import type { PciDevice } from '@vfu/pci';
import type { VfioUserServer, Logger } from '@vfu/server';

const MAX_LINE = 4096;

interface Request {
  get?: unknown;
  set?: unknown;
  do?: unknown;
  value?: unknown;
}

/** The device's declared state, byte arrays as hex. */
function stateOf(device: PciDevice): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(device.state).map(([k, v]) => [
      k,
      v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v,
    ]),
  );
}

/** A control value: a non-negative integer of at most 32 bits (the device checks its own range). */
function controlValue(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > 0xffffffff)
    throw new RangeError(
      `"value" must be an integer from 0 to 4294967295; got ${JSON.stringify(v)}`,
    );
  return v;
}

/** Answers one request line. */
function answer(line: string, device: PciDevice, server: VfioUserServer, log: Logger): object {
  const migration = server.migration;
  const controls = device.def.controls ?? {};
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    return { ok: false, error: 'not a JSON object' };
  }
  if (typeof req !== 'object' || req === null) return { ok: false, error: 'not a JSON object' };
  if (req.get === 'state') return { ok: true, state: stateOf(device) };
  if (req.get === 'migration' && migration) return { ok: true, migration: migration.status() };
  if (req.get === 'client')
    return { ok: true, connected: server.connected, sessions: server.sessionsServed };
  if (req.do === 'resume' && migration) {
    log.warn('control: resume of a migrated-away device requested by the operator');
    migration.resume();
    return { ok: true };
  }
  if (typeof req.set === 'string' && Object.hasOwn(controls, req.set)) {
    controls[req.set](device.context, controlValue(req.value));
    log.info(`control: ${req.set} set to ${req.value}`);
    return { ok: true };
  }
  const names = Object.keys(controls).join(', ') || 'none';
  return { ok: false, error: `unknown request; controls: ${names}` };
}

/** A control server on `path` (checked beforehand); resolves once it listens. */
export function controlServer(
  path: string,
  device: PciDevice,
  server: VfioUserServer,
  log: Logger,
): Promise<Server> {
  const srv = createServer(sock => {
    let buf = '';
    let done = false;
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      if (done) return;
      const lines = (buf + d).split('\n');
      buf = lines.pop() ?? '';
      for (const line of lines) {
        let reply: object;
        try {
          reply = line.length > MAX_LINE ? tooLong() : answer(line, device, server, log);
        } catch (e) {
          reply = { ok: false, error: (e as Error).message };
        }
        log.debug(`control: ${line.slice(0, 200)} -> ${JSON.stringify(reply).slice(0, 200)}`);
        sock.write(`${JSON.stringify(reply)}\n`);
      }
      if (buf.length > MAX_LINE) {
        sock.end(`${JSON.stringify(tooLong())}\n`);
        buf = '';
        done = true;
      }
    });
    sock.on('error', () => {});
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(path, () => {
      srv.off('error', reject);
      srv.on('error', e => log.error(`control socket: ${e.message}`));
      resolve(srv);
    });
  });
}

const tooLong = () => ({ ok: false, error: `request line longer than ${MAX_LINE} characters` });
