/* Payment read model and per-organization payment statistics (seed 000), in C: the same
 * documents as the Rust example, byte for byte. A PaymentFailed needs only its error; its amount
 * and currency are kept when present. */
#include "../sdk/refold.h"

void refold_describe(rf_manifest *m) {
  rf_manifest_init(m, "payments", 1);
  rf_event_type(m, "PaymentProcessed");
  rf_event_type(m, "PaymentFailed");
  rf_collection *payments = rf_collection_add(m, "payments");
  rf_index(payments, "by_organization", false, (const char *[]){"organizationId", "-processedAt", NULL});
  rf_index(payments, "by_status", false, (const char *[]){"status", "-processedAt", NULL});
  rf_collection_add(m, "org_stats");
}

bool refold_on_event(const rf_event *event) {
  bool processed = rf_event_is(event, "PaymentProcessed");
  if (!processed && !rf_event_is(event, "PaymentFailed")) return true;
  rf_json organization = rf_get(event->metadata, "organizationId");
  const char *org = rf_string(organization);
  rf_json amount = rf_get(event->data, "amount"), currency = rf_get(event->data, "currency");
  const char *currency_text = rf_string(currency);
  if (!org) return rf_fail(RF_INVALID_EVENT, "metadata.organizationId is not a string", NULL, NULL);
  /* A failed payment may leave out its amount and currency (or give them as null). */
  bool has_amount = processed || rf_present(amount), has_currency = processed || rf_present(currency);
  if (has_amount && amount.kind != RF_NUMBER)
    return rf_fail(RF_INVALID_EVENT, "data.amount is not a number", NULL, NULL);
  if (has_currency && !currency_text)
    return rf_fail(RF_INVALID_EVENT, "data.currency is not a string", NULL, NULL);

  rf_update payment = {0}, stats = {0};
  rf_set_str(&payment, "paymentId", event->aggregate_id);
  rf_set_json(&payment, "organizationId", organization);
  rf_set_json(&payment, "userId", rf_get(event->metadata, "userId"));
  rf_set_date(&payment, "updatedAt", event->timestamp_ms);
  rf_inc_i64(&payment, "attempts", 1);
  if (has_amount) rf_set_float(&payment, "amount", amount);
  if (has_currency) rf_set_json(&payment, "currency", currency);
  rf_set_json(&stats, "organizationId", organization);
  if (processed) {
    rf_set_json(&payment, "method", rf_get(event->data, "method"));
    rf_set_str(&payment, "status", "completed");
    rf_set_date(&payment, "processedAt", event->timestamp_ms);
    rf_inc_i64(&stats, "processedCount", 1);
    rf_inc_i64(&stats, rf_path("processedCents", currency_text), rf_cents(rf_number(amount)));
  } else {
    rf_json error = rf_get(event->data, "error");
    const char *reason = rf_string(error);
    if (!reason) return rf_fail(RF_INVALID_EVENT, "data.error is not a string", NULL, NULL);
    rf_set_str(&payment, "status", "failed");
    rf_set_json(&payment, "error", error);
    rf_inc_i64(&stats, "failedCount", 1);
    rf_inc_i64(&stats, rf_path("failuresByReason", reason), 1);
  }
  return rf_update_doc("payments", event->aggregate_id, &payment, true, NULL) &&
         rf_update_doc("org_stats", org, &stats, true, NULL);
}
