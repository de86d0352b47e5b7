//! Jobs and their results, as a worker kind's tests see them.

use std::time::Duration;

use futures::StreamExt as _;
use switchyard_proto::{ContentType, JobResult, decode};

/// The next job result on `sub`; panics after `within`.
pub async fn next_result(sub: &mut async_nats::Subscriber, within: Duration) -> JobResult {
    let msg = tokio::time::timeout(within, sub.next())
        .await
        .expect("a result in time")
        .expect("subscription open");
    decode(ContentType::Protobuf, &msg.payload).expect("a job result")
}
