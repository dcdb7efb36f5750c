/* Invoice billing view (seed 001), in C: one document per invoice through its lifecycle
 * (draft, sent, paid, cancelled). An InvoiceCreated needs only its amount and currency; lines may
 * come as `lines` or `items`, the customer as `customer` and/or `customerId`, the organization
 * from the data or the metadata. */
#include "../sdk/refold.h"

void refold_describe(rf_manifest *m) {
  rf_manifest_init(m, "invoice-billing", 1);
  rf_event_type(m, "InvoiceCreated");
  rf_event_type(m, "InvoiceSent");
  rf_event_type(m, "InvoicePaid");
  rf_event_type(m, "InvoiceCancelled");
  rf_collection *invoices = rf_collection_add(m, "invoices");
  rf_index(invoices, "by_organization_status", false, (const char *[]){"organizationId", "status", NULL});
  rf_index(invoices, "by_due_date", false, (const char *[]){"dueDate", NULL});
}

bool refold_on_event(const rf_event *event) {
  const char *id = event->aggregate_id;
  rf_update update = {0};
  if (rf_event_is(event, "InvoiceCreated")) {
    rf_json amount = rf_get(event->data, "amount"), lines = rf_get(event->data, "lines");
    if (!rf_present(lines)) lines = rf_get(event->data, "items");
    if (amount.kind != RF_NUMBER) return rf_fail(RF_INVALID_EVENT, "data.amount is not a number", NULL, NULL);
    if (rf_present(lines) && lines.kind != RF_ARRAY)
      return rf_fail(RF_INVALID_EVENT, "data.lines is not an array", NULL, NULL);
    rf_json organization = rf_get(event->data, "organizationId");
    if (!rf_present(organization)) organization = rf_get(event->metadata, "organizationId");
    rf_json customer = rf_get(event->data, "customer"), customer_id = rf_get(event->data, "customerId");
    rf_json due_date = rf_get(event->data, "dueDate");
    rf_set_str(&update, "invoiceId", id);
    if (rf_present(organization)) rf_set_json(&update, "organizationId", organization);
    if (rf_present(customer)) rf_set_json(&update, "customer", customer);
    if (rf_present(customer_id)) rf_set_json(&update, "customerId", customer_id);
    rf_set_float(&update, "amount", amount);
    rf_set_json(&update, "currency", rf_get(event->data, "currency"));
    rf_set_i64(&update, "lineCount", rf_present(lines) ? (int64_t)rf_array_len(lines) : 0);
    if (rf_present(due_date)) rf_set_json(&update, "dueDate", due_date);
    rf_set_str(&update, "status", "draft");
    rf_set_date(&update, "issuedAt", event->timestamp_ms);
    return rf_update_doc("invoices", id, &update, true, NULL);
  }
  if (rf_event_is(event, "InvoiceSent")) {
    rf_set_str(&update, "status", "sent");
    rf_set_date(&update, "sentAt", event->timestamp_ms);
  } else if (rf_event_is(event, "InvoicePaid")) {
    rf_set_str(&update, "status", "paid");
    rf_set_date(&update, "paidAt", event->timestamp_ms);
  } else if (rf_event_is(event, "InvoiceCancelled")) {
    rf_set_str(&update, "status", "cancelled");
    rf_set_date(&update, "cancelledAt", event->timestamp_ms);
    rf_set_json(&update, "cancellationReason", rf_get(event->data, "reason"));
  } else {
    return true;
  }
  bool exists = false;
  if (!rf_update_doc("invoices", id, &update, false, &exists)) return false;
  return exists || rf_fail(RF_INVALID_STATE, event->event_type, " for unknown invoice ", id);
}
