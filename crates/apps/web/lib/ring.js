// A ring buffer: the newest `capacity` items, oldest first, in fixed memory. What keeps
// a monitoring tab left open for a day at the size it had after a minute.

export class Ring {
  /** @param {number} capacity */
  constructor(capacity) {
    this.capacity = capacity;
    /** @type {any[]} */
    this.items = new Array(capacity);
    this.start = 0;
    this.length = 0;
  }

  /** Adds `item`, dropping the oldest when full; returns the dropped item, if any. */
  push(item) {
    let dropped;
    if (this.length < this.capacity) {
      this.items[(this.start + this.length) % this.capacity] = item;
      this.length++;
    } else {
      dropped = this.items[this.start];
      this.items[this.start] = item;
      this.start = (this.start + 1) % this.capacity;
    }
    return dropped;
  }

  /** The newest item (undefined when empty). */
  last() {
    return this.length ? this.items[(this.start + this.length - 1) % this.capacity] : undefined;
  }

  /** The items, oldest first (a new array). */
  toArray() {
    const out = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.items[(this.start + i) % this.capacity];
    return out;
  }

  clear() {
    this.items = new Array(this.capacity);
    this.start = 0;
    this.length = 0;
  }
}
