// Stands in for the readable-stream package in the bundle (see build.config.ts): it is a
// copy of Node's own streams for browsers, and Node 18's node:stream is the same API.
module.exports = require('node:stream');
