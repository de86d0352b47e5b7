//! Serde helpers for the JSON form of the envelopes.
//!
//! JSON documents carried in `bytes` fields appear as embedded JSON values (not strings or
//! arrays of numbers), and enums appear by their short lowercase name (`"succeeded"`).

/// A `bytes` field holding a UTF-8 JSON document, written as the document itself.
/// Empty bytes are `null`.
pub mod embedded {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if bytes.is_empty() {
            return serializer.serialize_none();
        }
        let text = std::str::from_utf8(bytes).map_err(S::Error::custom)?;
        let raw: &RawValue = serde_json::from_str(text).map_err(S::Error::custom)?;
        serde::Serialize::serialize(raw, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(Vec::new());
        }
        serde_json::to_vec(&value).map_err(D::Error::custom)
    }
}

/// Arbitrary bytes (a dead letter's original payload) as standard base64.
pub mod base64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

/// Serde for a prost enum field (an `i32`) by the value's short name: the protobuf name in
/// lowercase without the enum's prefix. Numbers and full protobuf names are accepted too.
macro_rules! enum_by_name {
    ($module:ident, $enum:ty, $prefix:literal) => {
        pub mod $module {
            use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

            pub fn serialize<S: Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
                match <$enum>::try_from(*value) {
                    Ok(known) => {
                        let name = known.as_str_name();
                        let short = name.strip_prefix($prefix).unwrap_or(name);
                        serializer.serialize_str(&short.to_ascii_lowercase())
                    }
                    Err(_) => serializer.serialize_i32(*value),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<i32, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum NameOrNumber {
                    Number(i32),
                    Name(String),
                }
                match NameOrNumber::deserialize(deserializer)? {
                    NameOrNumber::Number(n) => Ok(n),
                    NameOrNumber::Name(name) => {
                        let upper = name.to_ascii_uppercase();
                        let full = if upper.starts_with($prefix) {
                            upper
                        } else {
                            format!("{}{upper}", $prefix)
                        };
                        <$enum>::from_str_name(&full)
                            .map(|v| v as i32)
                            .ok_or_else(|| D::Error::custom(format!("unknown value {name:?}")))
                    }
                }
            }
        }
    };
}

enum_by_name!(job_status, crate::v1::JobStatus, "JOB_STATUS_");
enum_by_name!(error_code, crate::v1::ErrorCode, "ERROR_CODE_");
enum_by_name!(
    dead_letter_reason,
    crate::v1::DeadLetterReason,
    "DEAD_LETTER_REASON_"
);
enum_by_name!(timer_kind, crate::v1::TimerKind, "TIMER_KIND_");
