// Invoice billing view (seed 001), in JavaScript: one document per invoice through its
// lifecycle (draft, sent, paid, cancelled). An InvoiceCreated needs only its amount and currency;
// lines may come as `lines` or `items`, the customer as `customer` and/or `customerId`, the
// organization from the data or the metadata.
import { Float, ProjectionError, Update, collection, each, manifest, timestamp } from '../sdk/refold.js';

export function describe() {
  return manifest({
    name: 'invoice-billing',
    version: 1,
    eventTypes: ['InvoiceCreated', 'InvoiceSent', 'InvoicePaid', 'InvoiceCancelled'],
    collections: {
      invoices: [
        { name: 'by_organization_status', fields: ['organizationId', 'status'] },
        { name: 'by_due_date', fields: ['dueDate'] },
      ],
    },
  });
}

const invoices = collection('invoices');

export const handle = each((event) => {
  const id = event.aggregateId;
  let update;
  if (event.eventType === 'InvoiceCreated') {
    const data = JSON.parse(event.data);
    const meta = JSON.parse(event.metadata);
    update = new Update().set('invoiceId', id);
    const organization = data.organizationId ?? meta.organizationId;
    if (organization != null) update.set('organizationId', organization);
    if (data.customer != null) update.set('customer', data.customer);
    if (data.customerId != null) update.set('customerId', data.customerId);
    update
      .set('amount', new Float(data.amount))
      .set('currency', data.currency)
      .set('lineCount', (data.lines ?? data.items ?? []).length);
    if (data.dueDate != null) update.set('dueDate', data.dueDate);
    update.set('status', 'draft').set('issuedAt', timestamp(event));
    invoices.update(id, update);
    return;
  } else if (event.eventType === 'InvoiceSent') {
    update = new Update().set('status', 'sent').set('sentAt', timestamp(event));
  } else if (event.eventType === 'InvoicePaid') {
    update = new Update().set('status', 'paid').set('paidAt', timestamp(event));
  } else if (event.eventType === 'InvoiceCancelled') {
    const data = JSON.parse(event.data);
    update = new Update()
      .set('status', 'cancelled')
      .set('cancelledAt', timestamp(event))
      .set('cancellationReason', data.reason);
  } else {
    return;
  }
  if (!invoices.updateExisting(id, update)) {
    throw new ProjectionError('invalid-state', `${event.eventType} for unknown invoice ${id}`);
  }
});
