// A small layer over the Refold contract for JavaScript projections (QuickJS): update
// operators, collections, event decoding, dates. Documents come out as the Rust SDK writes them.
//
// Time and randomness are deterministic: `Date.now()` reads the timestamp of the event being
// handled (the host's clock), and `each` seeds `Math.random` per event, so a replay gives exactly
// what live processing gave.
import * as collections from 'refold:projection/collections@0.1.1';

import { Float, json } from './json.mjs';

export { Float, json };

/** Update operators, grouped by operator in the order they are first used. */
export class Update {
  constructor() {
    this.ops = {};
  }
  with(op, path, value) {
    (this.ops[op] ??= {})[path] = value;
    return this;
  }
  set(path, value) { return this.with('$set', path, value); }
  unset(path) { return this.with('$unset', path, ''); }
  inc(path, by) { return this.with('$inc', path, by); }
  push(path, value) { return this.with('$push', path, value); }
  addToSet(path, value) { return this.with('$addToSet', path, value); }
  pull(path, value) { return this.with('$pull', path, value); }
  text() { return json(this.ops); }
}

/** Thrown by `handle` to fail an event; the host applies the failure policy. */
export class ProjectionError extends Error {
  constructor(kind, message) {
    super(message);
    this.payload = { position: undefined, kind, message };
  }
}

function unwrap(call) {
  try {
    return call();
  } catch (e) {
    throw new ProjectionError('host', `${e?.payload?.tag ?? 'error'}: ${e?.payload?.val ?? e}`);
  }
}

/** One of the projection's collections. */
export function collection(name) {
  return {
    get: (id) => {
      const text = unwrap(() => collections.get(name, id));
      return text == null ? null : JSON.parse(text);
    },
    put: (id, document) => unwrap(() => collections.put(name, id, json(document))),
    delete: (id) => unwrap(() => collections.delete(name, id)),
    update: (id, update) => unwrap(() => collections.update(name, id, update.text(), true)),
    updateExisting: (id, update) => unwrap(() => collections.update(name, id, update.text(), false)),
  };
}

/** `YYYY-MM-DDTHH:MM:SS.mmmZ` of an event's time. */
export function iso8601(event) {
  return new Date(Number(event.timestampMs)).toISOString();
}

/** The event's time as a date value (`{"$date": ...}`). */
export function timestamp(event) {
  return { $date: iso8601(event) };
}

/** An index key: `field` or `-field` (descending). */
function keys(fields) {
  return fields.map((f) => (f.startsWith('-') ? { field: f.slice(1), descending: true } : { field: f, descending: false }));
}

/** A manifest: `collections` maps each name to its indexes, `{name: [fields], unique?}`. */
export function manifest({ name, version, eventTypes = [], aggregateTypes = [], collections: declared }) {
  return {
    name,
    version,
    eventTypes,
    aggregateTypes,
    collections: Object.entries(declared).map(([collection, indexes]) => ({
      name: collection,
      indexes: (indexes ?? []).map(({ name: index, fields, unique = false }) => ({ name: index, keys: keys(fields), unique })),
    })),
    batchSize: undefined,
    failurePolicy: undefined,
  };
}

/** Integer cents of an amount, rounded half away from zero as Rust's `f64::round`. */
export function cents(amount) {
  return Math.sign(amount) * Math.round(Math.abs(amount) * 100);
}

/** A 32-bit hash of a string (FNV-1a). */
function hash(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  }
  return h;
}

/** A generator of numbers in [0, 1): sfc32, seeded from `seed`. */
function sfc32(seed) {
  let a = hash(`a:${seed}`), b = hash(`b:${seed}`), c = hash(`c:${seed}`), d = 1;
  return () => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
}

/** The event being handled, until it first draws. */
let unseeded = null;
let generator = () => 0;

/** `Math.random` while an event is handled: seeded from the event when it first draws. */
function random() {
  if (unseeded !== null) {
    generator = sfc32(`${unseeded.position}:${unseeded.id}`);
    unseeded = null;
  }
  return generator();
}

/**
 * The `handle` export from a function of one event: `export const handle = each((event) => ...)`.
 * Each event draws `Math.random` from a generator seeded from the event (its position and id),
 * made when it first draws (most events never do): QuickJS keeps its own generator in memory,
 * which would otherwise carry over from one event to the next.
 */
export function each(fold) {
  return (events) => {
    for (const event of events) {
      unseeded = event;
      Math.random = random;
      fold(event);
    }
  };
}
