//! The integration worker. Arrives with the integration worker issue.
