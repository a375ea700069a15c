//! Consuming in batches, acknowledged after the work is durable.
//!
//! A [`BatchConsumer`] holds one channel with one consumer and a prefetch window
//! (`basic.qos`), and hands out deliveries in [`Batch`]es: it waits for a first delivery, then
//! takes whatever else arrives until the batch is full (messages or bytes) or a short window
//! has passed since the first one. The caller records the batch and only then acknowledges
//! it with one `basic.ack` carrying `multiple = true` on the batch's last delivery tag
//! ([`BatchAck::ack`]); if recording fails it hands the batch back with one `basic.nack`
//! (`requeue = true`, [`BatchAck::requeue`]). A process that dies before acknowledging gets
//! its batch redelivered, so the recording must be idempotent (the caller's job).
//!
//! Batches must be acknowledged in the order they were taken: a multiple ack covers every
//! earlier delivery of the channel, so acknowledging batch *k + 1* before batch *k* is
//! recorded would acknowledge *k* too early. The listener keeps that order by having one
//! writer that records batches in sequence.

use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;

use crate::BusError;

/// When a batch is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many messages per batch.
    pub max_messages: usize,
    /// A batch is closed once its bodies add up to this many bytes (a few huge messages must
    /// not make one enormous database statement).
    pub max_bytes: usize,
    /// A batch is closed this long after its first message arrived, full or not, so a quiet
    /// queue does not delay what it has.
    pub window: Duration,
    /// `basic.qos` prefetch: deliveries the broker may have outstanding (unacknowledged) on
    /// the channel. Four batches' worth: one being recorded, one parsed and waiting for the
    /// writer, and the next one already delivered when the writer frees up (measured: with
    /// two batches' worth, batches taken from a backlog averaged 330 messages instead of 490).
    pub prefetch: u16,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self { max_messages: 500, max_bytes: 2 * 1024 * 1024, window: Duration::from_millis(20), prefetch: 2000 }
    }
}

/// Deliveries taken together; acknowledge (or requeue) them all at once with [`Batch::ack`].
#[derive(Debug)]
pub struct Batch {
    /// The message bodies, in delivery order.
    pub bodies: Vec<Vec<u8>>,
    /// How many of them the broker marked as redelivered.
    pub redelivered: usize,
    /// Acknowledges the whole batch (see [`BatchAck`]).
    pub ack: BatchAck,
}

/// The acknowledgement of a whole batch: the acker of its last delivery, used with
/// `multiple = true`.
#[derive(Debug, Clone)]
pub struct BatchAck {
    last: Acker,
}

impl BatchAck {
    /// `basic.ack` with `multiple = true`: the broker forgets the batch (and any earlier
    /// delivery of the channel still unacknowledged, see the module header).
    pub async fn ack(&self) -> Result<(), BusError> {
        let done = bounded("basic.ack", self.last.ack(BasicAckOptions { multiple: true })).await?;
        if done { Ok(()) } else { Err(channel_gone("basic.ack")) }
    }

    /// `basic.nack` with `multiple = true, requeue = true`: the batch goes back to the queue,
    /// to this consumer or another.
    pub async fn requeue(&self) -> Result<(), BusError> {
        let done = bounded("basic.nack", self.last.nack(BasicNackOptions { multiple: true, requeue: true })).await?;
        if done { Ok(()) } else { Err(channel_gone("basic.nack")) }
    }
}

/// How often a consumer waiting for its first delivery checks that its channel is still open.
const CHANNEL_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// An acknowledgement or cancel at most [`crate::CLOSE_TIMEOUT`]: on a connection the broker
/// just reset, lapin may never settle the call, and a consumer waiting on it would never see
/// the connection end nor reconnect (seen with a broker stopped under load).
async fn bounded<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(crate::CLOSE_TIMEOUT, call).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(BusError::Operation(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{method}: no answer within {:?}", crate::CLOSE_TIMEOUT),
        )))),
    }
}

/// The error of an acknowledgement that could not be sent because its channel is closed
/// (lapin reports that as "nothing done" rather than an error).
fn channel_gone(method: &'static str) -> BusError {
    BusError::Operation(lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, method).into())
}

/// What [`BatchConsumer::next_batch`] returns.
#[derive(Debug)]
pub enum NextBatch {
    /// Deliveries to record; `stop_after` is true when shutdown was requested while it was
    /// filling (record it, acknowledge it, then stop).
    Batch { batch: Batch, stop_after: bool },
    /// Shutdown was requested and nothing was pending.
    Stopped,
    /// The consumer ended: the channel or connection failed or the broker cancelled the
    /// consumer (queue deleted). Reconnect.
    Ended(Option<BusError>),
}

/// One channel with one consumer on one queue.
pub struct BatchConsumer {
    channel: Channel,
    consumer: Consumer,
    limits: BatchLimits,
}

impl BatchConsumer {
    /// Opens a channel with the prefetch of `limits` and starts consuming `queue` (manual
    /// acknowledgement). `consumer_tag` shows in the management UI.
    pub async fn start(
        connection: &Connection,
        queue: &str,
        consumer_tag: &str,
        limits: BatchLimits,
    ) -> Result<Self, BusError> {
        let channel = connection.create_channel().await?;
        channel.basic_qos(limits.prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(queue.into(), consumer_tag.into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok(Self { channel, consumer, limits })
    }

    /// The next batch: waits for a first delivery (or shutdown), then fills the batch until
    /// it is full or `window` has passed since that first delivery.
    pub async fn next_batch(&mut self, shutdown: &CancellationToken) -> NextBatch {
        let channel = &self.channel;
        let first = tokio::select! {
            _ = shutdown.cancelled() => return NextBatch::Stopped,
            delivery = self.consumer.next() => delivery,
            // lapin normally ends the consumer when its connection fails; should it not (a
            // reset under load), the channel's state still says so: never wait on a dead one.
            _ = async {
                while channel.status().connected() {
                    tokio::time::sleep(CHANNEL_CHECK_INTERVAL).await;
                }
            } => return NextBatch::Ended(Some(channel_gone("basic.consume"))),
        };
        let first = match first {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return NextBatch::Ended(Some(error.into())),
            None => return NextBatch::Ended(None),
        };
        let deadline = tokio::time::Instant::now() + self.limits.window;
        let mut bytes = first.data.len();
        let mut redelivered = usize::from(first.redelivered);
        let mut last = first.acker;
        let mut bodies = Vec::with_capacity(self.limits.max_messages);
        bodies.push(first.data);
        let mut stop_after = false;
        while bodies.len() < self.limits.max_messages && bytes < self.limits.max_bytes {
            let next = tokio::select! {
                biased;
                delivery = self.consumer.next() => delivery,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.cancelled() => {
                    stop_after = true;
                    break;
                }
            };
            match next {
                Some(Ok(delivery)) => {
                    bytes += delivery.data.len();
                    redelivered += usize::from(delivery.redelivered);
                    last = delivery.acker;
                    bodies.push(delivery.data);
                }
                // The channel is gone: what we hold will be redelivered, to us after the
                // reconnect or to another consumer; recording it now would only make
                // duplicates, and its acknowledgement cannot be sent.
                Some(Err(error)) => return NextBatch::Ended(Some(error.into())),
                None => return NextBatch::Ended(None),
            }
        }
        NextBatch::Batch { batch: Batch { bodies, redelivered, ack: BatchAck { last } }, stop_after }
    }

    /// Stops the broker sending more (`basic.cancel`). Deliveries already prefetched and not
    /// taken into a batch stay unacknowledged and return to the queue when the channel
    /// closes.
    pub async fn cancel(&self) -> Result<(), BusError> {
        bounded("basic.cancel", self.channel.basic_cancel(self.consumer.tag(), BasicCancelOptions::default())).await?;
        Ok(())
    }

    /// Closes the channel (unacknowledged deliveries return to the queue).
    pub async fn close(self) {
        crate::close_channel(&self.channel).await;
    }
}
