// Invoice analytics view (seed 001), in JavaScript: per organization and month, invoices
// created, paid and cancelled, and amounts in cents per currency.
import { Update, cents, collection, each, iso8601, manifest } from '../sdk/refold.js';

export function describe() {
  return manifest({
    name: 'invoice-analytics',
    version: 1,
    eventTypes: ['InvoiceCreated', 'InvoicePaid', 'InvoiceCancelled'],
    collections: { monthly: [{ name: 'by_month', fields: ['month', 'organizationId'] }] },
  });
}

const monthly = collection('monthly');

export const handle = each((event) => {
  const meta = JSON.parse(event.metadata);
  const month = iso8601(event).slice(0, 7);
  const update = new Update().set('organizationId', meta.organizationId).set('month', month);
  if (event.eventType === 'InvoiceCreated') {
    const data = JSON.parse(event.data);
    update.inc('created', 1).inc(`invoicedCents.${data.currency}`, cents(data.amount));
  } else if (event.eventType === 'InvoicePaid') {
    const data = JSON.parse(event.data);
    update.inc('paid', 1).inc(`paidCents.${data.currency}`, cents(data.amount));
  } else if (event.eventType === 'InvoiceCancelled') {
    update.inc('cancelled', 1);
  } else {
    return;
  }
  monthly.update(`${meta.organizationId}:${month}`, update);
});
