// Stands in for ws, socks and worker-timers in the bundle (see build.config.ts): the probe
// never uses WebSocket or SOCKS transports or browser timers.
module.exports = {};
