// Payment read model and per-organization payment statistics (seed 000), in JavaScript: the
// same documents as the Rust example, byte for byte. A PaymentFailed needs only its error; its
// amount and currency are kept when present.
import { Float, ProjectionError, Update, cents, collection, each, manifest, timestamp } from '../sdk/refold.js';

export function describe() {
  return manifest({
    name: 'payments',
    version: 1,
    eventTypes: ['PaymentProcessed', 'PaymentFailed'],
    collections: {
      payments: [
        { name: 'by_organization', fields: ['organizationId', '-processedAt'] },
        { name: 'by_status', fields: ['status', '-processedAt'] },
      ],
      org_stats: [],
    },
  });
}

const payments = collection('payments');
const stats = collection('org_stats');

export const handle = each((event) => {
  const meta = JSON.parse(event.metadata);
  const data = JSON.parse(event.data);
  if (typeof meta.organizationId !== 'string') {
    throw new ProjectionError('invalid-event', 'metadata.organizationId is not a string');
  }
  const payment = new Update()
    .set('paymentId', event.aggregateId)
    .set('organizationId', meta.organizationId)
    .set('userId', meta.userId ?? null)
    .set('updatedAt', timestamp(event))
    .inc('attempts', 1);
  if (event.eventType === 'PaymentProcessed') {
    payment
      .set('amount', new Float(data.amount))
      .set('currency', data.currency)
      .set('method', data.method ?? null)
      .set('status', 'completed')
      .set('processedAt', timestamp(event));
    payments.update(event.aggregateId, payment);
    stats.update(meta.organizationId, new Update()
      .set('organizationId', meta.organizationId)
      .inc('processedCount', 1)
      .inc(`processedCents.${data.currency}`, cents(data.amount)));
  } else if (event.eventType === 'PaymentFailed') {
    if (data.amount != null) payment.set('amount', new Float(data.amount));
    if (data.currency != null) payment.set('currency', data.currency);
    payment.set('status', 'failed').set('error', data.error);
    payments.update(event.aggregateId, payment);
    stats.update(meta.organizationId, new Update()
      .set('organizationId', meta.organizationId)
      .inc('failedCount', 1)
      .inc(`failuresByReason.${data.error}`, 1));
  }
});
