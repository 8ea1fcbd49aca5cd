export { Connection, type Incoming, type ConnectionOptions } from './connection.js';
export { Listener, dial } from './listener.js';
export { someoneListens } from '@vfu/native';
export { RemoteError, ConnectionClosedError, TimeoutError } from './errors.js';
