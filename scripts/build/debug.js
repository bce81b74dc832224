// Stands in for the debug package in the bundle (see build.config.ts): mqtt.js and
// mqtt-packet log through it only when DEBUG is set, which a probe never does; the agent
// logs through its own JSON lines.
function disabled() {
  const log = () => undefined;
  log.enabled = false;
  return log;
}
module.exports = disabled;
module.exports.default = disabled;
