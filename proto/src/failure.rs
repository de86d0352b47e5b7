//! How a permanent failure's message starts when the caller needs to tell it apart: a job's
//! failure crosses the bus as a code and a message, and the gateway answers these two with
//! their own HTTP status (404, 412) rather than 502. Workers that produce them and the
//! gateway both use these constants; keep them stable.

/// The message of a "does not exist (for this tenant)" failure starts with this.
pub const NOT_FOUND_PREFIX: &str = "not found: ";
/// The message of a stale-version (optimistic concurrency) failure starts with this.
pub const CONFLICT_PREFIX: &str = "version conflict: ";
