export { VfioUserClient, type ClientOptions, type GuestRam } from './client.js';
