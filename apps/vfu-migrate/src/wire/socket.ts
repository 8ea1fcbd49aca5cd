// TCP or TLS (Node's tls, TLS 1.2 or later), both ends: a listener for the destination half, a
// dialer for the source half. With a CA, a TLS listener takes only peers whose certificate that
// CA signed, and a TLS dialer only a listener whose certificate it signed, for the host dialled.
import {
  createServer as tcpServer,
  connect as tcpConnect,
  type Server,
  type Socket,
} from 'node:net';
import { createServer as tlsServer, connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';

export interface TlsFiles {
  cert?: string;
  key?: string;
  ca?: string;
}

export interface Address {
  host: string;
  port: number;
}

/** `[HOST:]PORT` or `[V6]:PORT`; the host defaults to `fallback`. */
export function parseAddress(text: string, fallback: string): Address {
  const m = /^(?:\[([^\]]+)\]:|([^:]*):)?(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`"${text}" is not [HOST:]PORT`);
  return { host: m[1] ?? (m[2] || fallback), port };
}

const read = (path: string | undefined) => (path ? readFileSync(path) : undefined);

/** A TCP listener calling `onSocket` for each connection (once TLS is established, with TLS). */
export function listenTcp(tls: TlsFiles | null, onSocket: (s: Socket) => void): Server {
  if (!tls) return tcpServer(onSocket);
  const ca = read(tls.ca);
  return tlsServer(
    {
      cert: read(tls.cert),
      key: read(tls.key),
      ca,
      requestCert: !!ca,
      rejectUnauthorized: !!ca,
      minVersion: 'TLSv1.2',
    },
    onSocket,
  );
}

/** Connects over TCP (and completes TLS) within `timeoutMs`. */
export function connectTcp(to: Address, tls: TlsFiles | null, timeoutMs: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const event = tls ? 'secureConnect' : 'connect';
    const s: Socket = tls
      ? tlsConnect({
          host: to.host,
          port: to.port,
          ca: read(tls.ca),
          cert: read(tls.cert),
          key: read(tls.key),
          minVersion: 'TLSv1.2',
          servername: /^[\d.:]+$/.test(to.host) ? undefined : to.host,
        })
      : tcpConnect({ host: to.host, port: to.port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no connection to ${to.host}:${to.port} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once(event, () => {
      clearTimeout(timer);
      s.off('error', fail);
      resolve(s);
    });
    const fail = (e: Error) => {
      clearTimeout(timer);
      reject(new Error(`cannot connect to ${to.host}:${to.port}: ${e.message}`));
    };
    s.once('error', fail);
  });
}
