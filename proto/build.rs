//! Generates the envelope types from `proto/` with prost, parsing the schema with protox so
//! that building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/switchyard/v1/envelopes.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;

    let mut config = prost_build::Config::new();
    // Every envelope also has a JSON form, so that a shell with the `nats` CLI can publish one.
    config.message_attribute(
        ".switchyard.v1",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
    );
    // What other services publish is read strictly: a field the message does not have is
    // refused (and the message dead-lettered with the reason), not silently ignored.
    for message in ["StartWorkflow", "CancelWorkflow", "SignalWorkflow"] {
        config.message_attribute(
            format!(".switchyard.v1.{message}"),
            "#[serde(deny_unknown_fields)]",
        );
    }
    for field in [
        "StartWorkflow.input",
        "Job.input",
        "JobResult.output",
        "WorkflowEvent.data",
        "SignalWorkflow.payload",
    ] {
        config.field_attribute(
            format!(".switchyard.v1.{field}"),
            "#[serde(with = \"crate::json::embedded\")]",
        );
    }
    config.field_attribute(
        ".switchyard.v1.DeadLetter.payload",
        "#[serde(with = \"crate::json::base64\")]",
    );
    for (field, module) in [
        ("JobResult.status", "job_status"),
        ("JobError.code", "error_code"),
        ("DeadLetter.reason", "dead_letter_reason"),
        ("Timer.kind", "timer_kind"),
    ] {
        config.field_attribute(
            format!(".switchyard.v1.{field}"),
            format!("#[serde(with = \"crate::json::{module}\")]"),
        );
    }
    config.compile_fds(descriptors)?;
    Ok(())
}
