export { main, parse } from './main.js';
export { devices } from './devices.js';
