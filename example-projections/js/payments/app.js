// Payment read model and per-organization payment statistics (seed 000), in JavaScript:
// the same documents as the Rust example, byte for byte.
import { update } from 'refold:projection/collections@0.1.0';

// A JSON number that stays a float when it is integral (100 is written 100.0), as Rust's f64.
class Float {
  constructor(value) { this.value = value; }
}

function json(value) {
  if (value instanceof Float) {
    const text = JSON.stringify(value.value);
    return Number.isInteger(value.value) && !text.includes('e') ? text + '.0' : text;
  }
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return '[' + value.map(json).join(',') + ']';
  if (typeof value === 'object') {
    return '{' + Object.keys(value).map((k) => JSON.stringify(k) + ':' + json(value[k])).join(',') + '}';
  }
  return JSON.stringify(value);
}

class Update {
  constructor() { this.ops = {}; }
  with(op, path, value) { (this.ops[op] ??= {})[path] = value; return this; }
  set(path, value) { return this.with('$set', path, value); }
  inc(path, by) { return this.with('$inc', path, by); }
  text() { return json(this.ops); }
}

function timestamp(event) {
  return { $date: new Date(Number(event.timestampMs)).toISOString() };
}

function apply(collection, id, u) {
  update(collection, id, u.text(), true);
}

export function describe() {
  const key = (field, descending) => ({ field, descending });
  return {
    name: 'payments',
    version: 1,
    eventTypes: ['PaymentProcessed', 'PaymentFailed'],
    aggregateTypes: [],
    collections: [
      {
        name: 'payments',
        indexes: [
          { name: 'by_organization', keys: [key('organizationId', false), key('processedAt', true)], unique: false },
          { name: 'by_status', keys: [key('status', false), key('processedAt', true)], unique: false },
        ],
      },
      { name: 'org_stats', indexes: [] },
    ],
    batchSize: undefined,
    failurePolicy: undefined,
  };
}

export function handle(events) {
  for (const event of events) {
    const meta = JSON.parse(event.metadata);
    const data = JSON.parse(event.data);
    const payment = new Update()
      .set('paymentId', event.aggregateId)
      .set('organizationId', meta.organizationId)
      .set('userId', meta.userId ?? null)
      .set('updatedAt', timestamp(event))
      .inc('attempts', 1);
    if (event.eventType === 'PaymentProcessed') {
      payment.set('amount', new Float(data.amount)).set('currency', data.currency)
        .set('method', data.method ?? null).set('status', 'completed').set('processedAt', timestamp(event));
      apply('payments', event.aggregateId, payment);
      apply('org_stats', meta.organizationId, new Update()
        .set('organizationId', meta.organizationId)
        .inc('processedCount', 1)
        .inc(`processedCents.${data.currency}`, Math.round(data.amount * 100)));
    } else if (event.eventType === 'PaymentFailed') {
      payment.set('amount', new Float(data.amount)).set('currency', data.currency)
        .set('status', 'failed').set('error', data.error);
      apply('payments', event.aggregateId, payment);
      apply('org_stats', meta.organizationId, new Update()
        .set('organizationId', meta.organizationId)
        .inc('failedCount', 1)
        .inc(`failuresByReason.${data.error}`, 1));
    }
  }
}
