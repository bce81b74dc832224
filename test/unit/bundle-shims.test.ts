// The small modules that stand in for npm packages in the bundle behave as mqtt.js expects.

import assert from 'node:assert/strict';
import { test } from 'node:test';

const { LRUCache } = require('../../scripts/build/lru-cache.js') as {
  LRUCache: new (options: { max: number }) => { get(k: number): string | undefined; set(k: number, v: string): unknown; size: number; clear(): void; keys(): Iterable<number> };
};

test('lru-cache stand-in: evicts the least recently used, keys() lists the most recent first', () => {
  const cache = new LRUCache({ max: 3 });
  cache.set(1, 'a');
  cache.set(2, 'b');
  cache.set(3, 'c');
  assert.equal(cache.get(1), 'a');
  cache.set(4, 'd');
  assert.equal(cache.size, 3);
  assert.equal(cache.get(2), undefined, 'the least recently used entry (2) was evicted');
  assert.deepEqual([...cache.keys()], [4, 1, 3]);
  // topic-alias-send takes the last key as the alias to reuse: the least recently used.
  assert.equal([...cache.keys()][cache.size - 1], 3);
  cache.set(3, 'c2');
  assert.deepEqual([...cache.keys()], [3, 4, 1]);
  cache.clear();
  assert.equal(cache.size, 0);
});
