//! The RabbitMQ job queue: topology, publishing with publisher confirms, and the
//! apalis-amqp consumer the runner drives.
//!
//! What apalis-amqp 1.0 does not do, or does wrong, is done here (docs/adr/0004-jobs.md):
//!
//! - **Confirms.** Its own push publishes on a pooled channel that is not in confirm
//!   mode, so an `Ok` is no proof the broker has the message. We publish on our own
//!   channel in confirm mode, in its wire format (the JSON body its consumer decodes;
//!   properties become apalis metadata, so ours are harmless), persistent and
//!   `mandatory`, and wait for the confirm: a nack is an error; a return (no such queue)
//!   makes us declare the queues again and retry once.
//! - **Dead letters.** When retries are exhausted it rejects with `requeue: false`; on a
//!   queue without a dead-letter exchange the message is gone. We declare the queue with
//!   `x-dead-letter-exchange: ""` (the default exchange) and `x-dead-letter-routing-key:
//!   <queue>.dead`, and declare that queue. apalis-amqp's own declaration is made
//!   `passive` (it only checks the queue exists), because it would also pass the
//!   declaration arguments as consumer arguments.
//! - **Acks.** It acknowledges on the channel captured when the worker is built, which a
//!   consumer-only backend has not opened yet, so every ack would fail (`NotConnected`)
//!   and every message would be redelivered forever. We open the backend's channel before
//!   building the worker ([`AmqpQueue::consumer_backend`]). (Without it, its start-up
//!   also reports ready before the consumer exists and then panics in `poll_next`.)
//! - **A cancelled consumer.** When the broker cancels the consumer (its queue was
//!   deleted) the delivery stream ends; apalis takes that for the end of work and waits
//!   for a stop that never comes, so the worker would sit idle forever. [`EndIsFailure`]
//!   turns the end of the stream into an error, which ends the worker, and the runner
//!   starts a new one.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use aos_bus::lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use aos_bus::lapin::types::{AMQPValue, FieldTable};
use aos_bus::lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use apalis::prelude::{Backend, WorkerContext};
use apalis_amqp::{AmqpBackend, AmqpTask};
use apalis_core::backend::{BackendConfig, WireFormatBackend};
use futures::Sink;
use tokio::sync::Mutex;

use crate::queue::DeadLetter;
use crate::{Inbound, JobMessage, JobsError, TaskId};

/// AMQP delivery mode 2: the broker writes the message to disk (with a durable queue it
/// survives a broker restart).
const PERSISTENT: u8 = 2;

pub(crate) struct AmqpQueue {
    uri: String,
    uri_masked: String,
    queue: String,
    dead_letter_queue: String,
    /// The publisher's connection and confirm-mode channel; `None` after a failure until
    /// the next publish reconnects.
    publisher: Mutex<Option<Publisher>>,
}

struct Publisher {
    connection: Connection,
    channel: Channel,
}

/// What the broker said about one publish it accepted to answer.
enum Published {
    Confirmed,
    /// Returned because no queue matched (`mandatory`).
    Unroutable {
        reason: String,
    },
}

impl AmqpQueue {
    pub(crate) async fn connect(uri: &str, queue_prefix: &str) -> Result<Self, JobsError> {
        if queue_prefix.is_empty() {
            return Err(JobsError::Invalid("the job queue prefix must not be empty".to_owned()));
        }
        let queue = format!("{queue_prefix}.jobs");
        let amqp = AmqpQueue {
            uri: uri.to_owned(),
            uri_masked: aos_bus::mask_uri(uri),
            dead_letter_queue: format!("{queue}.dead"),
            queue,
            publisher: Mutex::new(None),
        };
        amqp.publisher_channel().await?;
        Ok(amqp)
    }

    pub(crate) fn queue_name(&self) -> &str {
        &self.queue
    }

    /// The publisher's channel, (re)connecting and (re)declaring the topology if there is
    /// no healthy one. The lock is held only to get the channel: publishes themselves run
    /// concurrently on it.
    async fn publisher_channel(&self) -> Result<Channel, JobsError> {
        let mut publisher = self.publisher.lock().await;
        if let Some(current) = publisher.as_ref()
            && current.channel.status().connected()
        {
            return Ok(current.channel.clone());
        }
        if let Some(stale) = publisher.take() {
            // Best effort: the connection is usually already gone.
            let _ = stale.connection.close(200, "reconnecting".into()).await;
        }
        let connection = aos_bus::connect(&self.uri, "aos-jobs publisher").await.map_err(|error| match error {
            aos_bus::BusError::Connect { uri, source } => JobsError::broker(format!("cannot connect to {uri}"), source),
            aos_bus::BusError::Operation(source) => JobsError::broker("cannot connect", source),
        })?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| JobsError::broker(format!("cannot open a channel on {}", self.uri_masked), error))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| JobsError::broker("cannot put the publisher channel in confirm mode", error))?;
        self.declare_topology(&channel).await?;
        *publisher = Some(Publisher { connection, channel: channel.clone() });
        Ok(channel)
    }

    /// The queue and its dead-letter queue, both durable. Declaring is idempotent; a queue
    /// that exists with other arguments is an error naming it (delete it, or use another
    /// prefix).
    async fn declare_topology(&self, channel: &Channel) -> Result<(), JobsError> {
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel
            .queue_declare(self.dead_letter_queue.as_str().into(), durable, FieldTable::default())
            .await
            .map_err(|error| JobsError::broker(format!("cannot declare queue {}", self.dead_letter_queue), error))?;
        channel
            .queue_declare(self.queue.as_str().into(), durable, self.queue_arguments())
            .await
            .map_err(|error| JobsError::broker(format!("cannot declare queue {}", self.queue), error))?;
        Ok(())
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        // The default exchange routes a dead letter by its routing key, i.e. straight to
        // the queue of that name: no exchange to declare.
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments
            .insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(self.dead_letter_queue.as_str().into()));
        arguments
    }

    pub(crate) async fn publish(&self, task_id: TaskId) -> Result<(), JobsError> {
        let mut result = self.publish_once(task_id).await;
        if matches!(result, Ok(Published::Unroutable { .. })) {
            // The queue is gone (deleted, or a broker reset lost it): declare it again and
            // retry once, rather than wait for a worker restart to do it.
            let channel = self.publisher_channel().await?;
            self.declare_topology(&channel).await?;
            result = self.publish_once(task_id).await;
        }
        match result {
            Ok(Published::Confirmed) => Ok(()),
            Ok(Published::Unroutable { reason }) => Err(JobsError::PublishRejected { task_id, reason }),
            Err(error) => {
                if matches!(error, JobsError::Broker { .. }) {
                    // The channel may be broken; let the next publish start afresh.
                    self.forget_publisher_if_broken().await;
                }
                Err(error)
            }
        }
    }

    async fn publish_once(&self, task_id: TaskId) -> Result<Published, JobsError> {
        let channel = self.publisher_channel().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(task_id.to_string().into());
        let confirm = channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                // `mandatory`: an unroutable message (no such queue) comes back instead of
                // being dropped.
                BasicPublishOptions { mandatory: true, immediate: false },
                &JobMessage::new(task_id).to_bytes(),
                properties,
            )
            .await
            .map_err(|error| JobsError::broker(format!("cannot publish task {task_id}"), error))?;
        let confirmation =
            confirm.await.map_err(|error| JobsError::broker(format!("no confirm for task {task_id}"), error))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(Published::Confirmed),
            Confirmation::Ack(Some(returned)) => Ok(Published::Unroutable {
                reason: format!("returned as unroutable ({} {})", returned.reply_code, returned.reply_text),
            }),
            Confirmation::Nack(_) => Err(JobsError::PublishRejected { task_id, reason: "nacked".to_owned() }),
            Confirmation::NotRequested => {
                Err(JobsError::PublishRejected { task_id, reason: "the channel is not in confirm mode".to_owned() })
            }
        }
    }

    async fn forget_publisher_if_broken(&self) {
        let mut publisher = self.publisher.lock().await;
        if publisher.as_ref().is_some_and(|current| !current.channel.status().connected()) {
            *publisher = None;
        }
    }

    pub(crate) async fn close(&self) {
        if let Some(publisher) = self.publisher.lock().await.take() {
            let _ = publisher.connection.close(200, "closing".into()).await;
        }
    }

    /// An apalis-amqp backend consuming the queue on its own connection, with its channel
    /// already open (see the module header), and the pool that connection lives in: close
    /// the pool when the worker ends so the connection goes (and unacknowledged deliveries
    /// return to the queue at once).
    ///
    /// `prefetch` bounds the deliveries the broker hands this consumer before they are
    /// acknowledged: the runner's concurrency. A delivery whose task failed for good is
    /// rejected without requeue (to the dead-letter queue); one the runner gives back
    /// (retries not exhausted but the worker is stopping) is nacked with requeue.
    pub(crate) async fn consumer_backend(
        &self,
        worker_name: &str,
        prefetch: u16,
    ) -> Result<(EndIsFailure<AmqpBackend<Inbound>>, deadpool_lapin::Pool), JobsError> {
        // The topology may be gone (a broker reset); the runner calls this at every
        // (re)start, so re-declare before the passive check below.
        let channel = self.publisher_channel().await?;
        self.declare_topology(&channel).await?;

        let connection_name = format!("aos-jobs worker {worker_name}");
        let pool = deadpool_lapin::Config {
            url: Some(self.uri.clone()),
            // apalis-amqp takes one connection to open its channel and hands it back.
            pool: Some(deadpool_lapin::PoolConfig::new(1)),
        }
        .create_pool(
            move || ConnectionProperties::default().with_connection_name(connection_name.as_str().into()),
            deadpool_lapin::Runtime::Tokio1,
        )
        .map_err(|error| JobsError::queue(format!("cannot build the consumer pool for {}", self.uri_masked), error))?;

        let config = apalis_amqp::Config::default()
            .queue(self.queue.as_str())
            .prefetch_count(prefetch.max(1))
            .declare_options(QueueDeclareOptions { passive: true, durable: true, ..QueueDeclareOptions::default() })
            .declare_arguments(FieldTable::default())
            .nack_options(BasicNackOptions { multiple: false, requeue: true });
        let mut backend = AmqpBackend::<Inbound>::new(pool.clone()).with_config(config);

        // Open the channel now, through the sink side (which stores it in the backend), so
        // that the acknowledger cloned from it at worker build time has it.
        poll_fn(|cx| <AmqpBackend<Inbound> as Sink<AmqpTask>>::poll_ready(Pin::new(&mut backend), cx)).await.map_err(
            |error| {
                JobsError::queue(
                    format!("cannot open the consumer channel on {} for {}", self.uri_masked, self.queue),
                    error,
                )
            },
        )?;
        Ok((EndIsFailure { inner: backend }, pool))
    }

    pub(crate) async fn depth(&self) -> Result<u64, JobsError> {
        let channel = self.publisher_channel().await?;
        let passive = QueueDeclareOptions { passive: true, durable: true, ..QueueDeclareOptions::default() };
        let queue = channel
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await
            .map_err(|error| JobsError::broker(format!("cannot inspect queue {}", self.queue), error))?;
        Ok(u64::from(queue.message_count()))
    }

    pub(crate) async fn pop_dead_letter(&self) -> Result<Option<DeadLetter>, JobsError> {
        let channel = self.publisher_channel().await?;
        let message = channel
            .basic_get(self.dead_letter_queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .map_err(|error| JobsError::broker(format!("cannot get from {}", self.dead_letter_queue), error))?;
        Ok(message.map(|message| DeadLetter::from_body(message.delivery.data)))
    }

    pub(crate) async fn delete_queues(&self) -> Result<(), JobsError> {
        let channel = self.publisher_channel().await?;
        for queue in [&self.queue, &self.dead_letter_queue] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|error| JobsError::broker(format!("cannot delete queue {queue}"), error))?;
        }
        Ok(())
    }
}

/// A consumer backend whose end of stream is an error (see the module header).
#[derive(Debug)]
pub(crate) struct EndIsFailure<B> {
    inner: B,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsumerError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Backend(E),
    #[error("the queue consumer ended: the broker cancelled it (queue deleted?) or its channel closed")]
    Ended,
}

impl<B: Backend> Backend for EndIsFailure<B> {
    type Task = B::Task;
    type Error = ConsumerError<B::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx, worker).map_err(ConsumerError::Backend)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        match self.inner.poll_next(cx, worker) {
            Poll::Ready(None) => Poll::Ready(Some(Err(ConsumerError::Ended))),
            Poll::Ready(Some(item)) => Poll::Ready(Some(item.map_err(ConsumerError::Backend))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_close(cx, worker).map_err(ConsumerError::Backend)
    }
}

impl<B: BackendConfig> BackendConfig for EndIsFailure<B> {
    type Args = B::Args;
    type Id = B::Id;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = B::Layer;

    fn config(&self) -> &Self::Config {
        self.inner.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        self.inner.middleware(worker)
    }
}

impl<B: WireFormatBackend> WireFormatBackend for EndIsFailure<B> {
    type Codec = B::Codec;
    type Compact = B::Compact;

    fn codec(&self) -> &Self::Codec {
        self.inner.codec()
    }
}
