export { VfioUserClient, type ClientOptions, type GuestRam } from './client.js';
export { MigDataRelay, RelayError } from './relay.js';
