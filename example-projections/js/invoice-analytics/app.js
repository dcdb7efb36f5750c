// Invoice analytics view (seed 001), in JavaScript: per organization and month, invoices
// created, paid and cancelled, and amounts in cents per currency. The organization comes from
// the metadata, else an InvoiceCreated's data; without one an event counts under its month alone.
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
  let organization = meta.organizationId;
  if (organization == null && event.eventType === 'InvoiceCreated') {
    organization = JSON.parse(event.data).organizationId;
  }
  const update = new Update();
  if (organization != null) update.set('organizationId', organization);
  update.set('month', month);
  if (event.eventType === 'InvoiceCreated') {
    const data = JSON.parse(event.data);
    update.inc('created', 1).inc(`invoicedCents.${data.currency}`, cents(data.amount));
  } else if (event.eventType === 'InvoicePaid') {
    const data = JSON.parse(event.data);
    update.inc('paid', 1);
    if (data.amount != null && data.currency != null) {
      update.inc(`paidCents.${data.currency}`, cents(data.amount));
    }
  } else if (event.eventType === 'InvoiceCancelled') {
    update.inc('cancelled', 1);
  } else {
    return;
  }
  monthly.update(organization == null ? month : `${organization}:${month}`, update);
});
