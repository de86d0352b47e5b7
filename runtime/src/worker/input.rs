//! A job's input as a typed value: one decoder for every worker, so a field of the wrong
//! shape is reported the same way (its path, serde's reason) whichever worker refuses it.

use serde::de::DeserializeOwned;
use switchyard_proto::Job;

use super::JobFailure;

/// Why a job's input does not decode as the type its operation reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct InputError {
    /// The path of the offending field, like `content.quote`; `input` for the whole.
    pub field: String,
    pub message: String,
}

impl From<InputError> for JobFailure {
    fn from(e: InputError) -> Self {
        JobFailure::invalid_input(e.field, e.message)
    }
}

/// Decoding a job's JSON input.
pub trait JobInput {
    /// The input as `T`; an empty input reads as `{}`. For an operation the catalog lists, its
    /// defaults are applied first and an optional field given as `null` reads as absent, as
    /// the catalog's schemas promise.
    fn input<T: DeserializeOwned>(&self) -> Result<T, InputError>;
}

impl JobInput for Job {
    fn input<T: DeserializeOwned>(&self) -> Result<T, InputError> {
        let bytes: &[u8] = if self.input.is_empty() {
            b"{}"
        } else {
            &self.input
        };
        let spec = switchyard_catalog::Catalog::builtin().get(&self.operation);
        if let Some(spec) = spec
            && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes)
        {
            spec.input.apply_defaults(&mut value);
            return serde_path_to_error::deserialize(value).map_err(input_error);
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(&mut de).map_err(input_error)
    }
}

fn input_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> InputError {
    let path = e.path().to_string();
    InputError {
        field: if path == "." {
            "input".to_owned()
        } else {
            path
        },
        message: e.into_inner().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Card {
        content: Content,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Content {
        quote: String,
    }

    #[test]
    fn a_field_of_the_wrong_shape_is_named_by_its_path() {
        let job = Job {
            input: br#"{"content": {"quote": 7}}"#.to_vec(),
            ..Job::default()
        };
        let e = job.input::<Card>().unwrap_err();
        assert_eq!(e.field, "content.quote");
        assert!(e.message.starts_with("invalid type: integer `7`"), "{e}");
    }

    #[test]
    fn an_empty_input_is_an_empty_object_and_a_non_object_names_the_input() {
        #[derive(Debug, Deserialize, PartialEq, Default)]
        struct Nothing {}
        assert_eq!(Job::default().input::<Nothing>(), Ok(Nothing {}));
        let job = Job {
            input: b"[1]".to_vec(),
            ..Job::default()
        };
        assert_eq!(job.input::<Nothing>().unwrap_err().field, "input");
    }

    #[test]
    fn a_catalog_operations_null_optional_fields_read_as_absent_and_defaults_apply() {
        #[derive(Debug, Deserialize)]
        struct Retrieve {
            card_ids: Vec<String>,
            allow_partial: bool,
            workflow: Option<String>,
        }
        let job = Job {
            operation: "cards.retrieve".into(),
            input: br#"{"card_ids": ["a"], "allow_partial": null, "workflow": null}"#.to_vec(),
            ..Job::default()
        };
        let input = job.input::<Retrieve>().unwrap();
        assert_eq!(input.card_ids, ["a"]);
        assert!(!input.allow_partial);
        assert_eq!(input.workflow, None);
        // A required field given as null is still named.
        let job = Job {
            operation: "cards.retrieve".into(),
            input: br#"{"card_ids": null}"#.to_vec(),
            ..Job::default()
        };
        assert_eq!(job.input::<Retrieve>().unwrap_err().field, "card_ids");
    }
}
