//! The research worker (`research.topic`). Arrives with the research worker issue.
