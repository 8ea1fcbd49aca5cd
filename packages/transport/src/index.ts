export { Connection, type Incoming, type ConnectionOptions } from './connection.js';
export { Listener, dial } from './listener.js';
export { RemoteError, ConnectionClosedError, TimeoutError } from './errors.js';
