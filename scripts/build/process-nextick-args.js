// Stands in for process-nextick-args in the bundle (see build.config.ts): it exists for
// Node versions whose process.nextTick took no arguments; Node 18's does.
module.exports = { nextTick: process.nextTick };
