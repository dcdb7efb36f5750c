/* Invoice analytics view (seed 001), in C: per organization and month, invoices created, paid
 * and cancelled, and amounts in cents per currency. The organization comes from the metadata,
 * else an InvoiceCreated's data; without one an event counts under its month alone. */
#include "../sdk/refold.h"

void refold_describe(rf_manifest *m) {
  rf_manifest_init(m, "invoice-analytics", 1);
  rf_event_type(m, "InvoiceCreated");
  rf_event_type(m, "InvoicePaid");
  rf_event_type(m, "InvoiceCancelled");
  rf_collection *monthly = rf_collection_add(m, "monthly");
  rf_index(monthly, "by_month", false, (const char *[]){"month", "organizationId", NULL});
}

/* Count the invoice and add its amount in cents per currency under `cents_field`. */
static bool add_amount(const rf_event *event, rf_update *update, const char *count_field,
                       const char *cents_field) {
  const char *currency = rf_string(rf_get(event->data, "currency"));
  rf_json amount = rf_get(event->data, "amount");
  if (!currency) return rf_fail(RF_INVALID_EVENT, "data.currency is not a string", NULL, NULL);
  if (amount.kind != RF_NUMBER) return rf_fail(RF_INVALID_EVENT, "data.amount is not a number", NULL, NULL);
  rf_inc_i64(update, count_field, 1);
  rf_inc_i64(update, rf_path(cents_field, currency), rf_cents(rf_number(amount)));
  return true;
}

bool refold_on_event(const rf_event *event) {
  bool created = rf_event_is(event, "InvoiceCreated");
  rf_json organization = rf_get(event->metadata, "organizationId");
  if (!rf_present(organization) && created) organization = rf_get(event->data, "organizationId");
  const char *org = rf_string(organization);
  if (rf_present(organization) && !org)
    return rf_fail(RF_INVALID_EVENT, "organizationId is not a string", NULL, NULL);
  char month[25];
  rf_iso8601(event->timestamp_ms, month);
  month[7] = 0;
  rf_update update = {0};
  if (org) rf_set_json(&update, "organizationId", organization);
  rf_set_str(&update, "month", month);
  bool ok = true;
  if (created) ok = add_amount(event, &update, "created", "invoicedCents");
  else if (rf_event_is(event, "InvoicePaid")) {
    /* A payment without its amount and currency is counted, with nothing added. */
    if (rf_present(rf_get(event->data, "amount")) && rf_present(rf_get(event->data, "currency")))
      ok = add_amount(event, &update, "paid", "paidCents");
    else rf_inc_i64(&update, "paid", 1);
  }
  else if (rf_event_is(event, "InvoiceCancelled")) rf_inc_i64(&update, "cancelled", 1);
  else ok = false;
  if (!ok) {
    rf_update_free(&update);
    return !rf_error.failed;
  }
  if (!org) return rf_update_doc("monthly", month, &update, true, NULL);
  const char *id = rf_path(org, month);
  char *colon = strchr(id + strlen(org), '.');
  *colon = ':'; /* `org:YYYY-MM` */
  return rf_update_doc("monthly", id, &update, true, NULL);
}
