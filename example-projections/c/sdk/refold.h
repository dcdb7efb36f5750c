/*
 * refold.h: a small layer over the Refold contract for projections in C.
 *
 * Include it in exactly one source file of the projection, and define there:
 *
 *     void refold_describe(rf_manifest *manifest);   // name, version, event types, collections
 *     bool refold_on_event(const rf_event *event);   // fold one event; false (via rf_fail) fails it
 *
 * The layer decodes events (their data and metadata are read as JSON in place, without a copy),
 * builds updates and documents as JSON, calls the projection's collections, and turns failures
 * into the contract's errors. Documents come out as the Rust SDK writes them. It uses no libc
 * I/O, so the component imports nothing but the Refold contract.
 *
 * Memory: strings returned by rf_string and rf_path live until the event is handled; updates
 * and documents are released by the call that writes them.
 *
 * With REFOLD_NO_BINDINGS defined before the include, only the parts that need no host (JSON,
 * buffers, updates, dates) are compiled, so pure logic can be tested natively.
 */
#ifndef REFOLD_H
#define REFOLD_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef REFOLD_NO_BINDINGS
#include "projection.h"

typedef projection_manifest_t rf_manifest;
typedef refold_projection_types_collection_spec_t rf_collection;
#else
typedef uint8_t refold_projection_types_error_kind_t;
#define REFOLD_PROJECTION_TYPES_ERROR_KIND_INVALID_EVENT 0
#define REFOLD_PROJECTION_TYPES_ERROR_KIND_INVALID_STATE 1
#define REFOLD_PROJECTION_TYPES_ERROR_KIND_HOST 2
#define REFOLD_PROJECTION_TYPES_ERROR_KIND_OTHER 3
#endif

/* ------------------------------------------------------------------------------------------ */
/* Text buffers                                                                                */

/* A growable, NUL-terminated text buffer. Zero-initialise it: `rf_buf b = {0};`. */
typedef struct {
  char *ptr;
  size_t len, cap;
} rf_buf;

static inline void rf_buf_add(rf_buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1) cap *= 2;
    char *grown = realloc(b->ptr, cap);
    if (!grown) abort();
    b->ptr = grown;
    b->cap = cap;
  }
  memcpy(b->ptr + b->len, s, n);
  b->len += n;
  b->ptr[b->len] = 0;
}

static inline void rf_buf_cstr(rf_buf *b, const char *s) { rf_buf_add(b, s, strlen(s)); }

static inline void rf_buf_i64(rf_buf *b, int64_t value) {
  char digits[24];
  int at = sizeof digits;
  uint64_t magnitude = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
  do {
    digits[--at] = (char)('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude);
  if (value < 0) digits[--at] = '-';
  rf_buf_add(b, digits + at, sizeof digits - at);
}

/* Append `s` as a JSON string literal. */
static inline void rf_buf_string(rf_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  rf_buf_add(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char escaped[2] = {'\\', (char)c};
      rf_buf_add(b, escaped, 2);
    } else if (c < 0x20) {
      char escaped[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      rf_buf_add(b, escaped, 6);
    } else {
      rf_buf_add(b, (const char *)&s[i], 1);
    }
  }
  rf_buf_add(b, "\"", 1);
}

static inline void rf_buf_free(rf_buf *b) {
  free(b->ptr);
  b->ptr = NULL;
  b->len = b->cap = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Failures and per-event memory                                                               */

#define RF_INVALID_EVENT REFOLD_PROJECTION_TYPES_ERROR_KIND_INVALID_EVENT
#define RF_INVALID_STATE REFOLD_PROJECTION_TYPES_ERROR_KIND_INVALID_STATE
#define RF_HOST REFOLD_PROJECTION_TYPES_ERROR_KIND_HOST
#define RF_OTHER REFOLD_PROJECTION_TYPES_ERROR_KIND_OTHER

static struct {
  bool failed;
  refold_projection_types_error_kind_t kind;
  rf_buf message;
} rf_error;

/* Fail the event with a message made of up to three parts (NULL parts are skipped). Returns
 * false, so `return rf_fail(...)` ends `refold_on_event`. */
static inline bool rf_fail(refold_projection_types_error_kind_t kind, const char *a, const char *b,
                    const char *c) {
  if (rf_error.failed) return false; /* the first failure is the one reported */
  rf_error.failed = true;
  rf_error.kind = kind;
  const char *parts[3] = {a, b, c};
  for (int i = 0; i < 3; i++)
    if (parts[i]) rf_buf_cstr(&rf_error.message, parts[i]);
  return false;
}

static void **rf_owned;
static size_t rf_owned_len, rf_owned_cap;

/* Keep `p` until the event is handled. */
static inline void *rf_keep(void *p) {
  if (rf_owned_len == rf_owned_cap) {
    rf_owned_cap = rf_owned_cap ? rf_owned_cap * 2 : 16;
    rf_owned = realloc(rf_owned, rf_owned_cap * sizeof *rf_owned);
    if (!rf_owned) abort();
  }
  rf_owned[rf_owned_len++] = p;
  return p;
}

static inline void rf_release_all(void) {
  for (size_t i = 0; i < rf_owned_len; i++) free(rf_owned[i]);
  rf_owned_len = 0;
}

static inline char *rf_strndup(const char *s, size_t n) {
  char *copy = rf_keep(malloc(n + 1));
  if (!copy) abort();
  memcpy(copy, s, n);
  copy[n] = 0;
  return copy;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading JSON in place                                                                       */

typedef enum { RF_MISSING, RF_NULL, RF_BOOL, RF_NUMBER, RF_STRING, RF_ARRAY, RF_OBJECT } rf_kind;

/* A JSON value: its raw text and kind. RF_MISSING (no text) for an absent field. */
typedef struct {
  const char *ptr;
  size_t len;
  rf_kind kind;
} rf_json;

static inline const char *rf_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

/* The end of the value starting at `p`, or NULL if it is not well-formed. */
static inline const char *rf_value_end(const char *p, const char *end, int depth) {
  if (p >= end || depth > 128) return NULL;
  if (*p == '"') {
    for (p++; p < end; p++) {
      if (*p == '\\') p++;
      else if (*p == '"') return p + 1;
    }
    return NULL;
  }
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p = rf_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
      if (close == '}') {
        if (p >= end || *p != '"') return NULL;
        p = rf_value_end(p, end, depth + 1);
        if (!p) return NULL;
        p = rf_ws(p, end);
        if (p >= end || *p != ':') return NULL;
        p = rf_ws(p + 1, end);
      }
      p = rf_value_end(p, end, depth + 1);
      if (!p) return NULL;
      p = rf_ws(p, end);
      if (p < end && *p == ',') {
        p = rf_ws(p + 1, end);
        continue;
      }
      return p < end && *p == close ? p + 1 : NULL;
    }
  }
  const char *start = p;
  while (p < end && (strchr("+-.eE", *p) || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z'))) p++;
  return p > start ? p : NULL;
}

static inline rf_kind rf_kind_of(const char *p) {
  switch (*p) {
    case '"': return RF_STRING;
    case '{': return RF_OBJECT;
    case '[': return RF_ARRAY;
    case 'n': return RF_NULL;
    case 't':
    case 'f': return RF_BOOL;
    default: return RF_NUMBER;
  }
}

/* Parse a whole JSON text; RF_MISSING if it is not one well-formed value. */
static inline rf_json rf_parse(const char *text, size_t len) {
  const char *end = text + len, *p = rf_ws(text, end);
  const char *after = rf_value_end(p, end, 0);
  rf_json missing = {NULL, 0, RF_MISSING};
  if (!after || rf_ws(after, end) != end) return missing;
  rf_json value = {p, (size_t)(after - p), rf_kind_of(p)};
  return value;
}

static inline unsigned rf_hex4(const char *p) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v = v * 16 + (unsigned)(c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0');
  }
  return v;
}

static inline void rf_utf8(rf_buf *b, unsigned cp) {
  char out[4];
  size_t n;
  if (cp < 0x80) { out[0] = (char)cp; n = 1; }
  else if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 63)); n = 2; }
  else if (cp < 0x10000) {
    out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 63));
    out[2] = (char)(0x80 | (cp & 63)); n = 3;
  } else {
    out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | ((cp >> 12) & 63));
    out[2] = (char)(0x80 | ((cp >> 6) & 63)); out[3] = (char)(0x80 | (cp & 63)); n = 4;
  }
  rf_buf_add(b, out, n);
}

/* The text of a JSON string, unescaped (kept until the event is handled); NULL if `v` is not a
 * string. */
static inline const char *rf_string(rf_json v) {
  if (v.kind != RF_STRING) return NULL;
  rf_buf b = {0};
  rf_buf_add(&b, "", 0);
  const char *p = v.ptr + 1, *end = v.ptr + v.len - 1;
  while (p < end) {
    if (*p != '\\') {
      const char *run = p;
      while (p < end && *p != '\\') p++;
      rf_buf_add(&b, run, (size_t)(p - run));
      continue;
    }
    char c = p[1];
    p += 2;
    const char *simple = strchr("\"\\/bfnrt", c);
    if (simple && c) {
      static const char to[] = "\"\\/\b\f\n\r\t";
      rf_buf_add(&b, &to[simple - "\"\\/bfnrt"], 1);
    } else if (c == 'u' && end - p >= 4) {
      unsigned cp = rf_hex4(p);
      p += 4;
      if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
        unsigned low = rf_hex4(p + 2);
        if (low >= 0xDC00 && low < 0xE000) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          p += 6;
        }
      }
      rf_utf8(&b, cp);
    }
  }
  rf_keep(b.ptr);
  return b.ptr;
}

/* Whether a value is there: neither absent nor null (an optional field). */
static inline bool rf_present(rf_json v) { return v.kind != RF_MISSING && v.kind != RF_NULL; }

/* The member `key` of an object; RF_MISSING when absent (or `object` is not an object). */
static inline rf_json rf_get(rf_json object, const char *key) {
  rf_json missing = {NULL, 0, RF_MISSING};
  if (object.kind != RF_OBJECT) return missing;
  const char *end = object.ptr + object.len - 1, *p = rf_ws(object.ptr + 1, end);
  size_t key_len = strlen(key);
  while (p < end && *p == '"') {
    const char *key_end = rf_value_end(p, end, 1);
    const char *value = rf_ws(rf_ws(key_end, end) + 1, end);
    const char *value_end = rf_value_end(value, end, 1);
    rf_json name = {p, (size_t)(key_end - p), RF_STRING};
    bool plain = memchr(p, '\\', name.len) == NULL;
    bool match = plain ? name.len == key_len + 2 && memcmp(p + 1, key, key_len) == 0
                       : strcmp(rf_string(name), key) == 0;
    if (match) {
      rf_json found = {value, (size_t)(value_end - value), rf_kind_of(value)};
      return found;
    }
    p = rf_ws(value_end, end);
    if (p < end && *p == ',') p = rf_ws(p + 1, end);
  }
  return missing;
}

/* The number of elements of an array (0 if `v` is not an array). */
static inline size_t rf_array_len(rf_json v) {
  if (v.kind != RF_ARRAY) return 0;
  const char *end = v.ptr + v.len - 1, *p = rf_ws(v.ptr + 1, end);
  size_t count = 0;
  while (p < end) {
    p = rf_ws(rf_value_end(p, end, 1), end);
    count++;
    if (p < end && *p == ',') p = rf_ws(p + 1, end);
  }
  return count;
}

/* The value of a JSON number (NAN if `v` is not a number). */
static inline double rf_number(rf_json v) {
  if (v.kind != RF_NUMBER) return NAN;
  char text[64];
  size_t n = v.len < sizeof text - 1 ? v.len : sizeof text - 1;
  memcpy(text, v.ptr, n);
  text[n] = 0;
  return strtod(text, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Events                                                                                      */

typedef struct {
  uint64_t position, version;
  int64_t timestamp_ms;
  const char *id, *aggregate_id, *aggregate_type, *event_type; /* NUL-terminated copies */
  rf_json data, metadata;                                     /* both JSON objects */
} rf_event;

static inline bool rf_event_is(const rf_event *event, const char *type) {
  return strcmp(event->event_type, type) == 0;
}

/* `YYYY-MM-DDTHH:MM:SS.mmmZ` of a time in milliseconds since the epoch (25 bytes with the NUL). */
static inline void rf_iso8601(int64_t ms, char out[25]) {
  int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
  int64_t in_day = ms - days * 86400000;
  /* Civil date from days since 1970-01-01 (Howard Hinnant's algorithm). */
  int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
  int64_t y = yoe + era * 400 + (m <= 2);
  int64_t fields[7] = {y, m, d, in_day / 3600000, in_day / 60000 % 60, in_day / 1000 % 60, in_day % 1000};
  static const int widths[7] = {4, 2, 2, 2, 2, 2, 3};
  static const char after[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
  char *p = out;
  for (int i = 0; i < 7; i++) {
    for (int w = widths[i] - 1, v = (int)fields[i]; w >= 0; w--, v /= 10) p[w] = (char)('0' + v % 10);
    p += widths[i];
    *p++ = after[i];
  }
  *p = 0;
}

/* Integer cents of an amount, rounded half away from zero (as Rust's `f64::round`). */
static inline int64_t rf_cents(double amount) { return (int64_t)round(amount * 100.0); }

/* ------------------------------------------------------------------------------------------ */
/* Updates and documents                                                                       */

/* Update operators, grouped by operator in the order they are first used. Zero-initialise it:
 * `rf_update u = {0};`. */
typedef struct {
  struct {
    const char *op;
    rf_buf fields;
  } ops[6];
  int count;
} rf_update;

/* Start the field `path` of operator `op`: the caller appends its JSON value. */
static inline rf_buf *rf_field(rf_update *u, const char *op, const char *path) {
  int i = 0;
  while (i < u->count && strcmp(u->ops[i].op, op) != 0) i++;
  if (i == u->count) {
    if (u->count == 6) abort();
    u->ops[u->count++].op = op;
  }
  rf_buf *b = &u->ops[i].fields;
  if (b->len) rf_buf_add(b, ",", 1);
  rf_buf_string(b, path, strlen(path));
  rf_buf_add(b, ":", 1);
  return b;
}

/* A JSON value as it is (`null` when missing). */
static inline void rf_buf_json(rf_buf *b, rf_json v) {
  if (v.kind == RF_MISSING) rf_buf_cstr(b, "null");
  else rf_buf_add(b, v.ptr, v.len);
}

/* A JSON number written as a float: `100` becomes `100.0`, as Rust's f64 writes it. */
static inline void rf_buf_float(rf_buf *b, rf_json number) {
  rf_buf_json(b, number);
  if (number.kind == RF_NUMBER && !memchr(number.ptr, '.', number.len) &&
      !memchr(number.ptr, 'e', number.len) && !memchr(number.ptr, 'E', number.len))
    rf_buf_cstr(b, ".0");
}

static inline void rf_buf_date(rf_buf *b, int64_t ms) {
  char iso[25];
  rf_iso8601(ms, iso);
  rf_buf_cstr(b, "{\"$date\":\"");
  rf_buf_cstr(b, iso);
  rf_buf_cstr(b, "\"}");
}

static inline void rf_set_json(rf_update *u, const char *path, rf_json v) { rf_buf_json(rf_field(u, "$set", path), v); }
static inline void rf_set_float(rf_update *u, const char *path, rf_json v) { rf_buf_float(rf_field(u, "$set", path), v); }
static inline void rf_set_str(rf_update *u, const char *path, const char *s) {
  rf_buf_string(rf_field(u, "$set", path), s, strlen(s));
}
static inline void rf_set_i64(rf_update *u, const char *path, int64_t n) { rf_buf_i64(rf_field(u, "$set", path), n); }
static inline void rf_set_date(rf_update *u, const char *path, int64_t ms) { rf_buf_date(rf_field(u, "$set", path), ms); }
static inline void rf_inc_i64(rf_update *u, const char *path, int64_t n) { rf_buf_i64(rf_field(u, "$inc", path), n); }
static inline void rf_inc_float(rf_update *u, const char *path, rf_json v) { rf_buf_float(rf_field(u, "$inc", path), v); }
static inline void rf_push_json(rf_update *u, const char *path, rf_json v) { rf_buf_json(rf_field(u, "$push", path), v); }
static inline void rf_unset(rf_update *u, const char *path) { rf_buf_cstr(rf_field(u, "$unset", path), "\"\""); }

static inline void rf_update_free(rf_update *u) {
  for (int i = 0; i < u->count; i++) rf_buf_free(&u->ops[i].fields);
  u->count = 0;
}

/* A path made of two parts joined by a dot, e.g. `processedCents.EUR` (kept until the event is
 * handled). */
static inline const char *rf_path(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *path = rf_keep(malloc(la + lb + 2));
  if (!path) abort();
  memcpy(path, a, la);
  path[la] = '.';
  memcpy(path + la + 1, b, lb + 1);
  return path;
}

#ifndef REFOLD_NO_BINDINGS
/* ------------------------------------------------------------------------------------------ */
/* Collections                                                                                 */

static inline projection_string_t rf_str(const char *s) {
  projection_string_t text = {(uint8_t *)s, strlen(s)};
  return text;
}

static inline bool rf_refused(refold_projection_collections_collection_error_t *error) {
  static const char *const what[] = {"unknown collection: ", "invalid id: ", "invalid document: ",
                                     "invalid update: ", "limit exceeded: ", "store: "};
  projection_string_t *text = &error->val.unknown_collection; /* every case holds a string */
  char *message = rf_strndup((const char *)text->ptr, text->len);
  const char *prefix = error->tag < 6 ? what[error->tag] : "refused: ";
  refold_projection_collections_collection_error_free(error);
  return rf_fail(RF_HOST, prefix, message, NULL);
}

/* Apply `update` to the document `id` (created when missing if `upsert`); `exists` (may be NULL)
 * tells whether a document exists afterwards. Releases the update. */
static inline bool rf_update_doc(const char *collection, const char *id, rf_update *update, bool upsert,
                          bool *exists) {
  rf_buf text = {0};
  rf_buf_add(&text, "{", 1);
  for (int i = 0; i < update->count; i++) {
    if (i) rf_buf_add(&text, ",", 1);
    rf_buf_string(&text, update->ops[i].op, strlen(update->ops[i].op));
    rf_buf_add(&text, ":{", 2);
    rf_buf_add(&text, update->ops[i].fields.ptr, update->ops[i].fields.len);
    rf_buf_add(&text, "}", 1);
  }
  rf_buf_add(&text, "}", 1);
  rf_update_free(update);
  projection_string_t c = rf_str(collection), i = rf_str(id), u = {(uint8_t *)text.ptr, text.len};
  bool found = false;
  refold_projection_collections_collection_error_t error;
  bool ok = refold_projection_collections_update(&c, &i, &u, upsert, &found, &error);
  rf_buf_free(&text);
  if (!ok) return rf_refused(&error);
  if (exists) *exists = found;
  return true;
}

/* Insert or replace the document `id` with the JSON object in `document`. Releases it. */
static inline bool rf_put(const char *collection, const char *id, rf_buf *document) {
  projection_string_t c = rf_str(collection), i = rf_str(id);
  projection_string_t d = {(uint8_t *)document->ptr, document->len};
  refold_projection_collections_collection_error_t error;
  bool ok = refold_projection_collections_put(&c, &i, &d, &error);
  rf_buf_free(document);
  return ok ? true : rf_refused(&error);
}

/* The document `id` as JSON text (kept until the event is handled), or NULL when absent: check
 * rf_error.failed to tell a refusal from absence. */
static inline const char *rf_get_doc(const char *collection, const char *id) {
  projection_string_t c = rf_str(collection), i = rf_str(id);
  projection_option_string_t found;
  refold_projection_collections_collection_error_t error;
  if (!refold_projection_collections_get(&c, &i, &found, &error)) {
    rf_refused(&error);
    return NULL;
  }
  if (!found.is_some) return NULL;
  char *text = rf_strndup((const char *)found.val.ptr, found.val.len);
  projection_string_free(&found.val);
  return text;
}

/* Write a line to the host's log (`REFOLD_PROJECTION_LOG_LEVEL_INFO`, ...). */
static inline void rf_log(refold_projection_log_level_t level, const char *message) {
  projection_string_t text = rf_str(message);
  refold_projection_log_write(level, &text);
}

/* ------------------------------------------------------------------------------------------ */
/* The manifest                                                                                */

/* `array` (of `len` elements of `size` bytes) grown by one zeroed element at index `len`. */
static inline void *rf_grown(void *array, size_t len, size_t size) {
  char *grown = realloc(array, (len + 1) * size);
  if (!grown) abort();
  memset(grown + len * size, 0, size);
  return grown;
}

static inline void rf_strings_push(projection_list_string_t *list, const char *s) {
  list->ptr = rf_grown(list->ptr, list->len, sizeof *list->ptr);
  projection_string_dup(&list->ptr[list->len++], s);
}

/* Start the manifest: name and version; no event type (all), no aggregate type (all). */
static inline void rf_manifest_init(rf_manifest *m, const char *name, uint32_t version) {
  memset(m, 0, sizeof *m);
  projection_string_dup(&m->name, name);
  m->version = version;
}

static inline void rf_event_type(rf_manifest *m, const char *type) { rf_strings_push(&m->event_types, type); }
static inline void rf_aggregate_type(rf_manifest *m, const char *type) { rf_strings_push(&m->aggregate_types, type); }

/* Declare a collection. */
static inline rf_collection *rf_collection_add(rf_manifest *m, const char *name) {
  refold_projection_types_list_collection_spec_t *list = &m->collections;
  list->ptr = rf_grown(list->ptr, list->len, sizeof *list->ptr);
  rf_collection *c = &list->ptr[list->len++];
  projection_string_dup(&c->name, name);
  return c;
}

/* Declare an index: `fields` is NULL-terminated, `-field` sorts descending. */
static inline void rf_index(rf_collection *c, const char *name, bool unique, const char *const *fields) {
  refold_projection_types_list_index_spec_t *list = &c->indexes;
  list->ptr = rf_grown(list->ptr, list->len, sizeof *list->ptr);
  refold_projection_types_index_spec_t *index = &list->ptr[list->len++];
  projection_string_dup(&index->name, name);
  index->unique = unique;
  size_t n = 0;
  while (fields[n]) n++;
  index->keys.ptr = calloc(n ? n : 1, sizeof *index->keys.ptr);
  if (!index->keys.ptr) abort();
  index->keys.len = n;
  for (size_t i = 0; i < n; i++) {
    bool descending = fields[i][0] == '-';
    projection_string_dup(&index->keys.ptr[i].field, fields[i] + descending);
    index->keys.ptr[i].descending = descending;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* The exports                                                                                 */

void refold_describe(rf_manifest *manifest);
bool refold_on_event(const rf_event *event);

void exports_projection_describe(projection_manifest_t *ret) { refold_describe(ret); }

bool exports_projection_handle(projection_list_event_t *events, projection_handle_error_t *err) {
  bool ok = true;
  for (size_t i = 0; ok && i < events->len; i++) {
    projection_event_t *raw = &events->ptr[i];
    rf_event event = {
        raw->position,
        raw->version,
        raw->timestamp_ms,
        rf_strndup((const char *)raw->id.ptr, raw->id.len),
        rf_strndup((const char *)raw->aggregate_id.ptr, raw->aggregate_id.len),
        rf_strndup((const char *)raw->aggregate_type.ptr, raw->aggregate_type.len),
        rf_strndup((const char *)raw->event_type.ptr, raw->event_type.len),
        rf_parse((const char *)raw->data.ptr, raw->data.len),
        rf_parse((const char *)raw->metadata.ptr, raw->metadata.len),
    };
    rf_error.failed = false;
    rf_error.message.len = 0;
    if (event.data.kind != RF_OBJECT) ok = rf_fail(RF_INVALID_EVENT, "event data is not a JSON object", NULL, NULL);
    else if (event.metadata.kind != RF_OBJECT) ok = rf_fail(RF_INVALID_EVENT, "event metadata is not a JSON object", NULL, NULL);
    else ok = refold_on_event(&event) && !rf_error.failed;
    if (!ok) {
      if (!rf_error.failed) rf_fail(RF_OTHER, "refold_on_event returned false without rf_fail", NULL, NULL);
      err->position.is_some = true;
      err->position.val = raw->position;
      err->kind = rf_error.kind;
      projection_string_dup_n(&err->message, rf_error.message.ptr, rf_error.message.len);
    }
    rf_release_all();
  }
  projection_list_event_free(events);
  return ok;
}

#endif /* REFOLD_NO_BINDINGS */
#endif /* REFOLD_H */
