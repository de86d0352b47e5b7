//! The cards worker: versioned content cards in Postgres. Arrives with the cards issue.
