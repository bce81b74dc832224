// Stands in for the lru-cache package in the bundle (see build.config.ts). mqtt.js uses it
// only for MQTT 5 topic aliases it sends (lib/topic-alias-send.js): at most a few dozen
// entries, through get, set, size, clear and keys (most recently used first). A Map keeps
// insertion order, so re-inserting on use keeps the least recently used entry first.
class LRUCache {
  constructor({ max }) {
    this.max = max;
    this.map = new Map();
  }

  get size() {
    return this.map.size;
  }

  get(key) {
    if (!this.map.has(key)) return undefined;
    const value = this.map.get(key);
    this.map.delete(key);
    this.map.set(key, value);
    return value;
  }

  set(key, value) {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value);
    return this;
  }

  clear() {
    this.map.clear();
  }

  *keys() {
    yield* [...this.map.keys()].reverse();
  }
}

module.exports = { LRUCache };
