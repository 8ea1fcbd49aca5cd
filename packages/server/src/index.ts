export { VfioUserServer, type ServerOptions } from './server.js';
export { Session } from './session.js';
export { defaultLimits, type ServerLimits } from './limits.js';
export type {
  Handler,
  HandlerContext,
  HandlerTable,
  Reply,
  RequestBody,
} from './handlers.js';
export { silentLogger, type Logger } from './logger.js';
