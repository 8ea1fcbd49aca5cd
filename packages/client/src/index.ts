export {
  VfioUserClient,
  mapArea,
  type ClientOptions,
  type GuestRam,
  type MappedArea,
} from './client.js';
export { MigDataRelay, RelayError } from './relay.js';
