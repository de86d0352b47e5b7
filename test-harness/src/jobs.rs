//! Jobs and their results, as a worker kind's tests see them.

use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt as _;
use switchyard_proto::{ContentType, Job, JobResult, decode, encode_proto, header, subject};

/// The next job result on `sub`; panics after `within`.
pub async fn next_result(sub: &mut async_nats::Subscriber, within: Duration) -> JobResult {
    let msg = tokio::time::timeout(within, sub.next())
        .await
        .expect("a result in time")
        .expect("subscription open");
    decode(ContentType::Protobuf, &msg.payload).expect("a job result")
}

/// Sends `job` to its operation's service endpoint (`svc.<kind>.<op>`), as the gateway does,
/// retrying while no replica answers yet (for up to 10 s); the job result.
pub async fn ask_service(client: &async_nats::Client, job: &Job, timeout: Duration) -> JobResult {
    let (kind, op) = job
        .operation
        .split_once('.')
        .expect("an operation named <kind>.<op>");
    let service = format!("{}.{op}", subject::service_group(kind));
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header::PROTOBUF);
    headers.insert(header::TENANT, job.tenant.as_str());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = async_nats::Request::new()
            .payload(encode_proto(job).into())
            .headers(headers.clone())
            .timeout(Some(timeout));
        match client.send_request(service.clone(), request).await {
            Ok(reply) => {
                return decode(ContentType::Protobuf, &reply.payload).expect("a job result");
            }
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{service}: {e}"),
        }
    }
}
