//! The Celery reference: what `loadtest/celery/bench.py` writes. The script runs the same
//! chains as the engine scenarios (1 and 3 no-op tasks, each feeding the next) with Redis as
//! broker and result backend, fetches every chain's result and checks its value, and exits
//! non-zero if any chain did not complete.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The script's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    pub celery_version: String,
    pub redis_version: String,
    /// Worker processes (prefork pool): the machine's cores.
    pub concurrency: usize,
    pub runs: Vec<CeleryRun>,
}

/// One chain length's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CeleryRun {
    pub steps: usize,
    pub chains: usize,
    /// Chains whose result was fetched and had the expected value.
    pub completed: usize,
    pub seconds: f64,
    pub chains_per_s: f64,
}

impl Reference {
    /// Reads the script's JSON, refusing one in which a chain did not complete.
    pub fn read(path: &Path) -> anyhow::Result<Reference> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the Celery results {}", path.display()))?;
        let reference: Reference = serde_json::from_str(&text)
            .with_context(|| format!("parsing the Celery results {}", path.display()))?;
        for run in &reference.runs {
            if run.completed != run.chains {
                return Err(crate::report::Error::LostWork {
                    scenario: "celery",
                    what: "chains",
                    accepted: run.chains,
                    completed: run.completed,
                    detail: format!("{}-step chains", run.steps),
                }
                .into());
            }
        }
        Ok(reference)
    }

    /// The run of `steps`-task chains, if the script measured one.
    pub fn run(&self, steps: usize) -> Option<&CeleryRun> {
        self.runs.iter().find(|r| r.steps == steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_with_a_lost_chain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("celery.json");
        let json = |completed: usize| {
            serde_json::json!({
                "celery_version": "5.7.0", "redis_version": "7.0.15", "concurrency": 2,
                "runs": [
                    { "steps": 1, "chains": 100, "completed": 100, "seconds": 1.0, "chains_per_s": 100.0 },
                    { "steps": 3, "chains": 100, "completed": completed, "seconds": 2.0, "chains_per_s": 50.0 }
                ]
            })
            .to_string()
        };
        std::fs::write(&path, json(100)).unwrap();
        let r = Reference::read(&path).unwrap();
        assert_eq!(r.run(3).unwrap().chains_per_s, 50.0);

        std::fs::write(&path, json(99)).unwrap();
        let e = Reference::read(&path).unwrap_err().to_string();
        assert!(e.contains("99 of 100 accepted chains completed"), "{e}");
    }
}
