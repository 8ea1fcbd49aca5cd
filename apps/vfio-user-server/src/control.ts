// An optional control socket (--control PATH) for tests and demos: one JSON object per line.
//   {"get": "state"}                  -> {"ok": true, "state": {...declared state...}}
//   {"set": "inputs", "value": 8}     -> {"ok": true}   (a control the device declares)
//   {"get": "migration"}              -> {"ok": true, "migration": {...}}
//                                        ({"state": "STOP", "migratedAway": true} for example)
//   {"do": "resume"}                  -> {"ok": true}   (runs a migrated-away device again)
import { createServer, type Server } from 'node:net';
import { unlinkSync } from 'node:fs';
import type { PciDevice } from '@vfu/pci';
import type { VfioUserServer } from '@vfu/server';

const controlNames = (device: PciDevice) =>
  Object.keys(device.def.controls ?? {}).join(', ') || 'none';

export function controlServer(
  path: string,
  device: PciDevice,
  server: VfioUserServer,
  log: (m: string) => void,
): Server {
  const migration = server.migration;
  try {
    unlinkSync(path);
  } catch {
    /* none */
  }
  const srv = createServer(sock => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      const lines = (buf + d).split('\n');
      buf = lines.pop() ?? '';
      for (const line of lines) {
        let reply: unknown;
        try {
          const req = JSON.parse(line) as {
            get?: string;
            set?: string;
            do?: string;
            value?: number;
          };
          if (req.get === 'state') {
            const state = Object.fromEntries(
              Object.entries(device.state).map(([k, v]) => [
                k,
                v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v,
              ]),
            );
            reply = { ok: true, state };
          } else if (req.get === 'migration' && migration) {
            reply = { ok: true, migration: migration.status() };
          } else if (req.do === 'resume' && migration) {
            log('control: resume requested');
            migration.resume();
            reply = { ok: true };
          } else if (req.set && device.def.controls?.[req.set] && typeof req.value === 'number') {
            device.def.controls[req.set](device.context, req.value);
            reply = { ok: true };
          } else
            reply = {
              ok: false,
              error: `unknown request; controls: ${controlNames(device)}`,
            };
        } catch (e) {
          reply = { ok: false, error: (e as Error).message };
        }
        sock.write(`${JSON.stringify(reply)}\n`);
      }
    });
    sock.on('error', () => {});
  });
  srv.listen(path);
  return srv;
}
