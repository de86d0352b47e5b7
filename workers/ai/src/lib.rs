//! The AI worker: providers and operations. Arrives with the AI worker issue.
