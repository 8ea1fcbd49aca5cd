export { Connection, type ConnectionOptions, type LentStreamLeft } from './connection.js';
export type { Incoming } from './incoming.js';
export { Listener, dial } from './listener.js';
export { someoneListens } from '@vfu/native';
export { RemoteError, ConnectionClosedError, TimeoutError } from './errors.js';
