//! How PostgreSQL's SQLSTATE classes split into refusals that no retry fixes and failures worth
//! another attempt, for the workers that own a database (each translates its own errors with
//! these).

/// Class 22 (data exception) or 23 (integrity constraint violation): Postgres refused the
/// statement for the data it carries.
pub fn refuses_content(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23")
}

/// [`refuses_content`], or class 42 (syntax error or access rule violation): the same
/// statement will fail again. Class 40 (transaction rollback: serialization failures,
/// deadlocks) and 08, 53, 57 (connection, resources, operator intervention) are transient.
pub fn is_permanent(code: &str) -> bool {
    refuses_content(code) || code.starts_with("42")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_split_as_documented() {
        assert!(refuses_content("23505") && is_permanent("23505"));
        assert!(refuses_content("22P02"));
        assert!(!refuses_content("42P01") && is_permanent("42P01"));
        for transient in ["40001", "40P01", "08006", "53300", "57P01"] {
            assert!(!is_permanent(transient), "{transient}");
        }
    }
}
