//! The usage ledger and read models. Arrives with the ledger issue.
