//! Reading the dead-letter stream, for tests that check what reached it.

use async_nats::jetstream;
use switchyard_proto::{ContentType, DeadLetter, decode, header, stream};

/// Every dead letter in the `DLQ` stream, oldest first, in whichever form it was written.
pub async fn dead_letters(js: &jetstream::Context) -> Vec<DeadLetter> {
    let mut dlq = js.get_stream(stream::DLQ).await.expect("the DLQ stream");
    let info = dlq.info().await.expect("DLQ info").clone();
    let mut letters = Vec::new();
    if info.state.messages == 0 {
        return letters;
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if let Ok(msg) = dlq.get_raw_message(seq).await {
            // Workers of declared kinds write JSON (docs/worker-protocol.md).
            let form =
                ContentType::from_header(msg.headers.get(header::CONTENT_TYPE).map(|v| v.as_str()));
            letters.push(decode(form, &msg.payload).expect("a dead letter"));
        }
    }
    letters
}
