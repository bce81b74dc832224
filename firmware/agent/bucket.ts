// A token bucket: up to `capacity` events in a burst, then one more every `refillMs`. Time is
// passed in, so the bucket has no clock of its own and is exact under test.

export class TokenBucket {
  private tokens: number;
  private updatedAt: number;

  constructor(
    private readonly capacity: number,
    private readonly refillMs: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.updatedAt = now;
  }

  available(now: number): number {
    return Math.min(this.capacity, this.tokens + Math.max(0, now - this.updatedAt) / this.refillMs);
  }

  /** Takes one token if there is one. */
  take(now: number): boolean {
    const tokens = this.available(now);
    if (tokens < 1) return false;
    this.tokens = tokens - 1;
    this.updatedAt = now;
    return true;
  }

  full(now: number): boolean {
    return this.available(now) >= this.capacity;
  }

  /** When the next whole token is there (now, if one is). */
  nextTokenAt(now: number): number {
    const tokens = this.available(now);
    return tokens >= 1 ? now : now + (1 - tokens) * this.refillMs;
  }
}
