//! A JSON object as compact text, checked as every store keeps it: what an import stores for an
//! event's payload and metadata.
//!
//! [`JsonObject::parse`] makes it straight from the source's text in one pass, building no
//! [`Value`]: the text is copied out compact, in serde_json's own formatting, so the result is
//! byte for byte what `Value::to_string` gives for the same input. What that pass is not sure of
//! (a field name given twice, an Extended JSON wrapper's content, nesting past the limit) it
//! leaves to [`JsonObject::from_value`], the slower way through a [`Value`], which decides.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::extjson::{self, ConvertError, MAX_NESTING};

/// A JSON object as compact text, whose Extended JSON wrappers, field names and nesting were
/// checked ([`extjson::check_at`] at the second level: a field of a stored event). It may also
/// keep the object as parsed ([`Self::keeping`]), for a store that stores values rather than text:
/// parsing the text again could move a double by its last bit (serde_json's quick float parsing).
/// Two are equal when their texts are.
#[derive(Debug, Clone)]
pub struct JsonObject {
    text: String,
    value: Option<Map<String, Value>>,
}

impl PartialEq for JsonObject {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for JsonObject {}

/// The level of an event's payload in a stored event.
const LEVEL: usize = 2;

/// Most fields of one object the quick pass compares for repeats; a larger object goes the slow
/// way.
const MAX_QUICK_FIELDS: usize = 256;

impl JsonObject {
    /// `{}`.
    pub fn empty() -> Self {
        Self::text("{}".to_owned())
    }

    fn text(text: String) -> Self {
        Self { text, value: None }
    }

    /// From a parsed value: an object (null reads as `{}`), checked.
    pub fn from_value(value: &Value) -> Result<Self, ConvertError> {
        match value {
            Value::Null => Ok(Self::empty()),
            Value::Object(_) => {
                extjson::check_at(value, LEVEL)?;
                Ok(Self::text(value.to_string()))
            }
            _ => Err(ConvertError::new("must be an object")),
        }
    }

    /// [`Self::from_value`], keeping the object as parsed ([`Self::value`]).
    pub fn keeping(value: Value) -> Result<Self, ConvertError> {
        let mut object = Self::from_value(&value)?;
        if let Value::Object(map) = value {
            object.value = Some(map);
        }
        Ok(object)
    }

    /// The object as parsed, when it was kept.
    pub fn value(&self) -> Option<&Map<String, Value>> {
        self.value.as_ref()
    }

    /// Straight from JSON text holding one object (or `null`), in one pass; `None` when the text
    /// is not that, or holds anything the pass leaves to [`Self::from_value`].
    pub fn parse(text: &str) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_str(text);
        let object = Self::read(&mut de).ok()?;
        de.end().ok()?;
        Some(object)
    }

    /// [`Self::parse`] for a value inside a larger text: an error when the value is not an
    /// object or `null`, or holds anything the quick pass leaves to [`Self::from_value`].
    pub fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        deserializer.deserialize_any(Top { out: &mut out })?;
        // Only whole UTF-8 text went in, and serde_json writes only that.
        String::from_utf8(out)
            .map(Self::text)
            .map_err(de::Error::custom)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether it is `{}`.
    pub fn is_empty(&self) -> bool {
        self.text == "{}"
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.text
    }
}

/// Why the quick pass gave up: the slow way decides.
fn give_up<E: de::Error>() -> E {
    E::custom("left to the slow way")
}

/// The payload itself: an object, or `null` for `{}`.
struct Top<'o> {
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"{}");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Compact {
            out: self.out,
            level: LEVEL,
        }
        .visit_map(map)
    }
}

/// Copies one value, compact, checking it as it goes.
struct Compact<'o> {
    out: &'o mut Vec<u8>,
    level: usize,
}

impl Compact<'_> {
    fn write<T: serde::Serialize + ?Sized, E: de::Error>(self, value: &T) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, value).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Compact<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Compact<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.write(&v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // As a `Value` would hold it: a number, or null when it is not finite.
        match serde_json::Number::from_f64(v) {
            Some(n) => self.write(&n),
            None => self.write(&()),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.write(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.write(&())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.level > MAX_NESTING {
            return Err(give_up());
        }
        self.out.push(b'[');
        let mut first = true;
        loop {
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            let element = Compact {
                out: &mut *self.out,
                level: self.level + 1,
            };
            if seq.next_element_seed(element)?.is_none() {
                self.out.truncate(mark);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.level > MAX_NESTING {
            return Err(give_up());
        }
        self.out.push(b'{');
        // Where each field name was written, to find one given twice.
        let mut names: Vec<(usize, usize)> = Vec::new();
        loop {
            if !names.is_empty() {
                self.out.push(b',');
            }
            let start = self.out.len();
            let Some(name) = map.next_key_seed(Name {
                out: &mut *self.out,
                first: names.is_empty(),
            })?
            else {
                if !names.is_empty() {
                    self.out.pop();
                }
                break;
            };
            let end = self.out.len();
            let written = &self.out[start..end];
            if name == NameKind::Wrapper
                || names.len() >= MAX_QUICK_FIELDS
                || names.iter().any(|&(s, e)| self.out[s..e] == *written)
            {
                return Err(give_up());
            }
            names.push((start, end));
            self.out.push(b':');
            map.next_value_seed(Compact {
                out: &mut *self.out,
                level: self.level + 1,
            })?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// What a field name says of its object.
#[derive(PartialEq, Eq)]
enum NameKind {
    Plain,
    /// The first name starts with `$`: possibly an Extended JSON wrapper, whose content the slow
    /// way checks.
    Wrapper,
}

/// Copies a field name, refusing a NUL (BSON cannot hold one).
struct Name<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'de> DeserializeSeed<'de> for Name<'_> {
    type Value = NameKind;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<NameKind, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name<'_> {
    type Value = NameKind;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NameKind, E> {
        if v.contains('\0') {
            return Err(give_up());
        }
        if self.first && v.starts_with('$') {
            return Ok(NameKind::Wrapper);
        }
        serde_json::to_writer(&mut *self.out, v).map_err(E::custom)?;
        Ok(NameKind::Plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick pass gives what the slow way gives, or leaves the text to it.
    fn both(text: &str) -> (Option<JsonObject>, Result<JsonObject, ConvertError>) {
        let slow = serde_json::from_str::<Value>(text)
            .map_err(|e| ConvertError::new(&e.to_string()))
            .and_then(|v| JsonObject::from_value(&v));
        (JsonObject::parse(text), slow)
    }

    #[test]
    fn the_quick_pass_writes_what_a_value_writes() {
        for text in [
            r#"{}"#,
            r#"null"#,
            r#" { "b" : 1 , "a" : [ 1, -2, 3.5, 1e3, 1E-7, 18446744073709551615 ] } "#,
            r#"{"s": "tab\t quote\" slash\/ unicode \u00e9 \ud83d\ude00 nul\u0000", "n": null, "t": true, "f": false}"#,
            r#"{"nested": {"deeper": {"list": [{"x": []}, {}]}}, "e\u0301": "accent in a name"}"#,
            r#"{"big": 123456789012345678901234567890, "neg": -9223372036854775808}"#,
        ] {
            let (quick, slow) = both(text);
            assert_eq!(quick.as_ref(), Some(&slow.expect(text)), "{text}");
        }
    }

    #[test]
    fn what_the_quick_pass_is_not_sure_of_is_left_to_the_slow_way() {
        for text in [
            // A name given twice: a value keeps the last, in the first one's place.
            r#"{"a": 1, "b": 2, "a": 3}"#,
            // Extended JSON, well-formed and not.
            r#"{"at": {"$date": "2024-12-19T10:00:00Z"}}"#,
            r#"{"at": {"$date": "yesterday"}}"#,
            r#"{"$set": 1}"#,
            // A NUL in a name.
            "{\"a\\u0000b\": 1}",
        ] {
            let (quick, _) = both(text);
            assert_eq!(quick, None, "{text}");
        }
        let (_, slow) = both(r#"{"a": 1, "b": 2, "a": 3}"#);
        assert_eq!(slow.expect("a value").as_str(), r#"{"a":3,"b":2}"#);
        assert!(both(r#"{"at": {"$date": "yesterday"}}"#).1.is_err());
    }

    #[test]
    fn anything_but_one_object_is_refused() {
        for text in [
            r#"[]"#,
            r#"1"#,
            r#""text""#,
            r#"{"a": 1} {"b": 2}"#,
            r#"{"a": "#,
            r#"{"a": 1,}"#,
        ] {
            let (quick, _) = both(text);
            assert_eq!(quick, None, "{text}");
        }
        assert!(both("[]").1.is_err());
    }

    #[test]
    fn nesting_is_bounded_as_the_slow_way_bounds_it() {
        let deep = |levels: usize| {
            format!(
                "{}{}",
                "{\"a\":".repeat(levels),
                "1".to_owned() + &"}".repeat(levels)
            )
        };
        // The payload is the second level: 99 more nested objects reach the limit of 100.
        let (quick, slow) = both(&deep(MAX_NESTING - 1));
        assert_eq!(quick.as_ref(), Some(&slow.expect("at the limit")));
        let (quick, slow) = both(&deep(MAX_NESTING));
        assert_eq!(quick, None);
        assert!(slow.is_err());
    }
}
