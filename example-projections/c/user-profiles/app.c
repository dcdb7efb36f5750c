/* User profiles (seed 002), in C: the state of each user as a left fold of its events. The
 * organization comes from the data, else the metadata, and is left out when neither has it. */
#include "../sdk/refold.h"

void refold_describe(rf_manifest *m) {
  rf_manifest_init(m, "user-profiles", 1);
  rf_event_type(m, "UserRegistered");
  rf_event_type(m, "UserRenamed");
  rf_event_type(m, "UserEmailChanged");
  rf_aggregate_type(m, "User");
  rf_collection *users = rf_collection_add(m, "users");
  rf_index(users, "by_email", true, (const char *[]){"email", NULL});
  rf_index(users, "by_organization", false, (const char *[]){"organizationId", NULL});
}

bool refold_on_event(const rf_event *event) {
  const char *id = event->aggregate_id;
  if (rf_event_is(event, "UserRegistered")) {
    rf_json name = rf_get(event->data, "name");
    rf_buf doc = {0};
    rf_buf_cstr(&doc, "{\"userId\":");
    rf_buf_string(&doc, id, strlen(id));
    rf_buf_cstr(&doc, ",\"name\":");
    rf_buf_json(&doc, name);
    rf_buf_cstr(&doc, ",\"email\":");
    rf_buf_json(&doc, rf_get(event->data, "email"));
    rf_json organization = rf_get(event->data, "organizationId");
    if (!rf_present(organization)) organization = rf_get(event->metadata, "organizationId");
    if (rf_present(organization)) {
      rf_buf_cstr(&doc, ",\"organizationId\":");
      rf_buf_json(&doc, organization);
    }
    rf_buf_cstr(&doc, ",\"registeredAt\":");
    rf_buf_date(&doc, event->timestamp_ms);
    rf_buf_cstr(&doc, ",\"names\":[");
    rf_buf_json(&doc, name);
    rf_buf_cstr(&doc, "],\"emailChanges\":0,\"version\":");
    rf_buf_i64(&doc, (int64_t)event->version);
    rf_buf_cstr(&doc, "}");
    return rf_put("users", id, &doc);
  }
  rf_update update = {0};
  if (rf_event_is(event, "UserRenamed")) {
    rf_json name = rf_get(event->data, "name");
    rf_set_json(&update, "name", name);
    rf_push_json(&update, "names", name);
  } else if (rf_event_is(event, "UserEmailChanged")) {
    rf_set_json(&update, "email", rf_get(event->data, "email"));
    rf_inc_i64(&update, "emailChanges", 1);
  } else {
    return true;
  }
  rf_set_i64(&update, "version", (int64_t)event->version);
  bool exists = false;
  if (!rf_update_doc("users", id, &update, false, &exists)) return false;
  return exists || rf_fail(RF_INVALID_STATE, event->event_type, " for unknown user ", id);
}
