//! The workflow engine: definitions, templating, DAG scheduling and instance state kept in
//! JetStream KV. Arrives with the workflow engine issue.
