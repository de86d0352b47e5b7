//! Definitions parsed locally, so that a start's input is checked against the workflow's input
//! schema before anything is published (a 422 instead of an instance that fails at once).
//!
//! The orchestrator stays the authority: the gateway asks it for the definition on every start
//! (which also tells an unknown workflow apart), and only the parsing is cached, by
//! (tenant, name, version) and checked against the text, since versions are immutable.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use switchyard_workflow::{
    Operations,
    definition::{Definition, ValidateOptions},
    operations,
};

/// Most parsed definitions kept; the cache starts over when full.
const CAPACITY: usize = 256;

type Key = (String, String, u32);

/// Parsed definitions by (tenant, name, version).
#[derive(Debug)]
pub struct DefinitionCache {
    options: ValidateOptions,
    /// The operations declared at run time, when the gateway follows them.
    operations: Option<Arc<Operations>>,
    entries: Mutex<HashMap<Key, Arc<Definition>>>,
}

impl DefinitionCache {
    /// `options`: the orchestrator's template variables and limits, so definitions parse here
    /// as they do there.
    pub fn new(options: ValidateOptions, operations: Option<Arc<Operations>>) -> Self {
        DefinitionCache {
            options,
            operations,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The parsed definition of `source`; `None` when it does not parse here (the orchestrator,
    /// which accepted it, then checks the input itself).
    pub fn get(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
        source: &str,
    ) -> Option<Arc<Definition>> {
        let key = (tenant.to_owned(), name.to_owned(), version);
        if let Some(def) = self.lock().get(&key)
            && def.source == source
        {
            return Some(def.clone());
        }
        let parsed = operations::parse_with(self.operations.as_deref(), source, &self.options);
        let def = match parsed {
            Ok(def) => Arc::new(def),
            Err(problems) => {
                tracing::warn!(workflow = name, version, %problems, "a registered definition does not parse in the gateway");
                return None;
            }
        };
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, def.clone());
        Some(def)
    }

    /// Parses a definition without caching it.
    pub fn parse(&self, source: &str) -> Option<Definition> {
        operations::parse_with(self.operations.as_deref(), source, &self.options).ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Definition>>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
