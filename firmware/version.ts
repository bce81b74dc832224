// Firmware identity carried by every result. `FW` follows Atlas's integer firmware number
// (major*10000 + minor*100 + patch of VERSION); `MVER` is the measurement-code version:
// major = incompatible result change, minor = new fields, patch = fixes.
export const VERSION = '0.1.0';
export const FW = 100;
export const MVER = '1.0.0';
