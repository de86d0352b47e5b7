//! What the deliveries of a job ended in, so that attempts count what the handler did and not
//! how often the bus delivered the job (ADR 14).
//!
//! A job's record lives in the `WF_ATTEMPTS` bucket under `<kind>.<stream sequence>` and is
//! written only when a delivery does not succeed: a handler failure (an attempt used) or a
//! hand-back for an infrastructure fault or shutdown (no attempt used). A first delivery reads
//! nothing; a redelivery reads the record once. Deliveries the record does not account for
//! ended without the loop saying why (the replica crashed): they count as attempts, as before.
//!
//! When the bucket cannot be written (the bus is failing too), the record is kept in the
//! replica until the next delivery of the job here writes it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use switchyard_proto::stream;

use crate::Error;

/// Records kept in a replica while the bucket cannot take them; beyond this the oldest go.
const HELD_LIMIT: usize = 10_000;

/// What the deliveries of one job ended in, besides the current one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The job the record is for, so a key reused after the stream was recreated is ignored.
    pub job_id: String,
    /// Handler runs that ended in a retryable failure: attempts used.
    pub failures: u32,
    /// Deliveries handed back without a verdict (infrastructure unavailable, replica
    /// stopping): no attempt used.
    pub handed_back: u32,
    /// When the first infrastructure fault was recorded, ms since the epoch; 0 for none.
    pub faulty_since_ms: i64,
    /// The infrastructure that last failed and how, for the dead letter if patience runs out.
    pub last_fault: String,
}

impl Record {
    /// Attempts used before a delivery numbered `delivered`: recorded failures plus earlier
    /// deliveries nobody accounted for (each is a replica that died mid-job).
    pub fn attempts_used(&self, delivered: u32) -> u32 {
        let earlier = delivered.saturating_sub(1);
        let unaccounted = earlier.saturating_sub(self.failures + self.handed_back);
        self.failures + unaccounted
    }

    /// Whether earlier deliveries ended without a verdict the loop recorded.
    pub fn has_unaccounted(&self, delivered: u32) -> bool {
        delivered.saturating_sub(1) > self.failures + self.handed_back
    }

    /// How long infrastructure has been failing this job, as of `now_ms`.
    pub fn faulty_for(&self, now_ms: i64) -> Duration {
        if self.faulty_since_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(u64::try_from(now_ms - self.faulty_since_ms).unwrap_or(0))
        }
    }

    /// The record with one more delivery handed back for `fault`, first noticed at `now_ms`.
    pub fn with_fault(mut self, fault: &str, now_ms: i64) -> Self {
        self.handed_back += 1;
        if self.faulty_since_ms == 0 {
            self.faulty_since_ms = now_ms;
        }
        fault.clone_into(&mut self.last_fault);
        self
    }

    /// The larger of two accounts of the same job (one from the bucket, one held here).
    fn merge(self, other: Record) -> Record {
        Record {
            failures: self.failures.max(other.failures),
            handed_back: self.handed_back.max(other.handed_back),
            faulty_since_ms: match (self.faulty_since_ms, other.faulty_since_ms) {
                (0, b) => b,
                (a, 0) => a,
                (a, b) => a.min(b),
            },
            last_fault: if other.last_fault.is_empty() {
                self.last_fault
            } else {
                other.last_fault
            },
            job_id: self.job_id,
        }
    }
}

/// The kind's records in `WF_ATTEMPTS`, and those the bucket could not take yet.
#[derive(Debug, Clone)]
pub(crate) struct Attempts {
    kind: &'static str,
    bucket: kv::Store,
    held: Arc<Mutex<HashMap<String, Record>>>,
}

impl Attempts {
    /// The bucket, or the error that says to provision it.
    pub async fn open(js: &jetstream::Context, kind: &'static str) -> Result<Self, Error> {
        let bucket = js
            .get_key_value(stream::ATTEMPTS_BUCKET)
            .await
            .map_err(|_| Error::NotProvisioned {
                what: format!("KV bucket {}", stream::ATTEMPTS_BUCKET),
            })?;
        Ok(Attempts {
            kind,
            bucket,
            held: Arc::default(),
        })
    }

    fn key(&self, stream_seq: u64) -> String {
        format!("{}.{stream_seq}", self.kind)
    }

    /// The record of the job at `stream_seq`; empty when there is none for `job_id`.
    pub async fn read(&self, stream_seq: u64, job_id: &str) -> Result<Record, Error> {
        let key = self.key(stream_seq);
        let stored = self.bucket.get(&key).await.map_err(Error::jetstream)?;
        let stored = stored
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
            .filter(|r| r.job_id == job_id)
            .unwrap_or_else(|| Record {
                job_id: job_id.to_owned(),
                ..Record::default()
            });
        let held = self.lock().remove(&key).filter(|r| r.job_id == job_id);
        Ok(match held {
            Some(held) => stored.merge(held),
            None => stored,
        })
    }

    /// Stores `record`; when the bucket cannot take it, holds it here for the next delivery.
    /// Returns whether the bucket took it.
    pub async fn write(&self, stream_seq: u64, record: &Record) -> bool {
        let key = self.key(stream_seq);
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        match self.bucket.put(&key, bytes.into()).await {
            Ok(_) => {
                self.lock().remove(&key);
                true
            }
            Err(_) => {
                let mut held = self.lock();
                if held.len() >= HELD_LIMIT {
                    held.clear();
                }
                held.insert(key, record.clone());
                false
            }
        }
    }

    /// Forgets the record of a job that was settled (best effort: records also expire).
    pub async fn forget(&self, stream_seq: u64) {
        let key = self.key(stream_seq);
        self.lock().remove(&key);
        let _ = self.bucket.purge(&key).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unaccounted_deliveries_and_failures_use_attempts() {
        let record = Record {
            failures: 1,
            handed_back: 3,
            ..Record::default()
        };
        // Deliveries 1 to 4 accounted for (one failure, three hand-backs): the 5th is attempt 2.
        assert_eq!(record.attempts_used(5), 1);
        assert!(!record.has_unaccounted(5));
        // One more delivery than recorded: a replica died mid-job.
        assert_eq!(record.attempts_used(6), 2);
        assert!(record.has_unaccounted(6));
        assert_eq!(Record::default().attempts_used(1), 0);
    }

    #[test]
    fn faults_keep_their_first_time_and_merge_to_the_larger_account() {
        let first = Record::default().with_fault("the database: pool timed out", 1_000);
        let second = first.clone().with_fault("the bus: timed out", 5_000);
        assert_eq!(second.faulty_since_ms, 1_000);
        assert_eq!(second.handed_back, 2);
        assert_eq!(second.faulty_for(61_000), Duration::from_secs(60));
        let merged = first.merge(second.clone());
        assert_eq!(merged.handed_back, 2);
        assert_eq!(merged.last_fault, "the bus: timed out");
        assert_eq!(Record::default().faulty_for(5), Duration::ZERO);
    }
}
