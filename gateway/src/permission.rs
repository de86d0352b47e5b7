//! What a route needs of its caller's roles; which role grants what is [`crate::auth`]'s
//! table.

use std::fmt;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Instance status, definitions (read), validation.
    WorkflowsRead,
    /// Trigger, execute, cancel, signal.
    WorkflowsRun,
    /// Register and delete definitions.
    DefinitionsWrite,
    /// The live worker registry.
    RegistryRead,
    /// The audit log (`GET /api/v1/audit`).
    AuditRead,
    /// Reads about a tenant other than the token's (`tenant=` on `/usage` and `/audit`).
    OtherTenants,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::WorkflowsRead => "workflows:read",
            Permission::WorkflowsRun => "workflows:run",
            Permission::DefinitionsWrite => "definitions:write",
            Permission::RegistryRead => "registry:read",
            Permission::AuditRead => "audit:read",
            Permission::OtherTenants => "tenants:other",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
