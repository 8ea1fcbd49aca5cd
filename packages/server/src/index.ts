export { VfioUserServer, type ServerOptions } from './server.js';
export { Session } from './session.js';
export { defaultLimits, type ServerLimits } from './limits.js';
export type { Handler, Reply } from './handlers.js';
