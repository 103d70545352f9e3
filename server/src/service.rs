//! The `umadb.v1.DCB` service on a [`Backend`].
//!
//! Reads, heads and subscriptions are prefixes: each one first asks the backend for its settled
//! head (see `PgEventStore::settled_head_for`) and returns nothing above it, so that a client
//! guarding its decision with the read's query and the `after` it was given is exact, whatever
//! order PostgreSQL's transactions commit in. A read or a subscription is a prefix of the events
//! matching its query (it waits only for appends in flight that write such events); `Head` is a
//! prefix of the whole log.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dcbstore::{AppendCondition, Query};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, Tracking};
use crate::proto::{self, dcb_server::Dcb};
use crate::{status, wire};

/// Events per response when the request does not say (UmaDB's default).
pub const DEFAULT_BATCH_SIZE: u32 = 1024;
/// The most events per response (UmaDB's bound).
pub const MAX_BATCH_SIZE: u32 = 4096;
/// Responses a stream holds ahead of its client: past them, reading waits (back-pressure).
const STREAM_BUFFER: usize = 2;

/// The service: the backend, the wake-up of subscriptions, the server's shutdown.
#[derive(Clone)]
pub(crate) struct Service {
    pub(crate) backend: Arc<Backend>,
    /// Bumped after each append through this server: wakes its subscriptions at once.
    pub(crate) appended: Arc<watch::Sender<u64>>,
    /// How often a subscription looks for events appended by other processes.
    pub(crate) poll_interval: Duration,
    /// Turns true when the server stops: streams end.
    pub(crate) stopping: watch::Receiver<bool>,
}

type Responses<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn batch_size(requested: Option<u32>) -> u32 {
    requested
        .unwrap_or(DEFAULT_BATCH_SIZE)
        .clamp(1, MAX_BATCH_SIZE)
}

/// Counts a call and its outcome.
fn record<T>(rpc: &'static str, started: Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => "ok",
        Err(s) => code_name(s.code()),
    };
    metrics::counter!("dcbstore_server_requests_total", "rpc" => rpc, "code" => code).increment(1);
    metrics::histogram!("dcbstore_server_request_seconds", "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        FailedPrecondition => "failed_precondition",
        InvalidArgument => "invalid_argument",
        Unauthenticated => "unauthenticated",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        _ => "internal",
    }
}

#[tonic::async_trait]
impl Dcb for Service {
    type ReadStream = Responses<proto::ReadResponse>;

    async fn read(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let started = Instant::now();
        let result = self.start_read(request.into_inner()).await;
        record("read", started, &result);
        result.map(Response::new)
    }

    type SubscribeStream = Responses<proto::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // Nothing comes after the last position.
        if request.after != Some(u64::MAX) {
            let subscription = Subscription {
                service: self.clone(),
                query: wire::query(request.query),
                next: request.after.map(|a| a + 1),
                batch: batch_size(request.batch_size),
                tx,
            };
            tokio::spawn(subscription.run());
        }
        metrics::counter!("dcbstore_server_requests_total", "rpc" => "subscribe", "code" => "ok")
            .increment(1);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let started = Instant::now();
        let result = self.append_request(request.into_inner()).await;
        record("append", started, &result);
        result.map(|position| Response::new(proto::AppendResponse { position }))
    }

    async fn head(
        &self,
        _request: Request<proto::HeadRequest>,
    ) -> Result<Response<proto::HeadResponse>, Status> {
        let started = Instant::now();
        let result = self
            .backend
            .settled_head(&Query::all())
            .await
            .map_err(status::from_store);
        record("head", started, &result);
        result.map(|position| Response::new(proto::HeadResponse { position }))
    }

    async fn get_tracking_info(
        &self,
        request: Request<proto::TrackingRequest>,
    ) -> Result<Response<proto::TrackingResponse>, Status> {
        let started = Instant::now();
        let source = request.into_inner().source;
        let result = self
            .backend
            .tracking(&source)
            .await
            .map_err(|e| status::from_backend(&e));
        record("get_tracking_info", started, &result);
        result.map(|position| Response::new(proto::TrackingResponse { position }))
    }
}

impl Service {
    async fn append_request(&self, request: proto::AppendRequest) -> Result<u64, Status> {
        let events = request
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| wire::event(i, e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| status::invalid(e.to_string()))?;
        let condition = request
            .condition
            .map(|c| AppendCondition::new(wire::query(c.fail_if_events_match), c.after));
        let tracking = request.tracking_info.map(|t| Tracking {
            source: t.source,
            position: t.position,
        });
        let position = self
            .backend
            .append(events, condition, tracking)
            .await
            .map_err(|e| status::from_backend(&e))?;
        self.appended.send_modify(|n| *n += 1);
        Ok(position)
    }

    /// Checks the request, captures the settled head, and streams the events up to it.
    async fn start_read(
        &self,
        request: proto::ReadRequest,
    ) -> Result<Responses<proto::ReadResponse>, Status> {
        #[allow(deprecated)]
        if request.subscribe.unwrap_or(false) {
            return Err(status::invalid(
                "the `subscribe` argument of Read is deprecated: call Subscribe instead",
            ));
        }
        let query = wire::query(request.query);
        let backwards = request.backwards.unwrap_or(false);
        let remaining = request.limit.unwrap_or(u32::MAX);
        let batch = batch_size(request.batch_size);
        let mut next = request.start;
        // Forwards, the first page comes with the settled head (one round trip); backwards, the
        // head comes first, and the read starts from it.
        let (head, first) = if backwards {
            let head = self.backend.settled_head(&query).await;
            let head = head.map_err(status::from_store)?;
            if let Some(head) = head {
                next = Some(next.map_or(head, |n| n.min(head)));
            }
            (head, None)
        } else {
            let want = u64::from(remaining.min(batch));
            let first = self.backend.settled_page(&query, next, want).await;
            let (events, head) = first.map_err(status::from_store)?;
            (head, Some(events))
        };
        let read = Read {
            backend: self.backend.clone(),
            query,
            backwards,
            limit: request.limit,
            remaining,
            batch,
            head,
            next,
            first,
            stopping: self.stopping.clone(),
            sent_any: false,
            done: false,
        };
        // Each page is read when the transport asks for the next response: a slow client holds
        // the read back (bounded memory), and a read that fits one page costs no task.
        let responses = futures::stream::unfold(read, |mut read| async move {
            let response = read.next_response().await?;
            Some((response, read))
        });
        Ok(Box::pin(responses))
    }
}

/// A read in progress: pages of the events up to the head captured when it began.
struct Read {
    backend: Arc<Backend>,
    query: Query,
    backwards: bool,
    limit: Option<u32>,
    /// Events still to send under the limit.
    remaining: u32,
    batch: u32,
    /// The settled head when the read began: every page stops there, so that the pages, read
    /// in separate snapshots, make one prefix of the log.
    head: Option<u64>,
    /// Where the next page starts.
    next: Option<u64>,
    /// The first page, read with the head (forwards).
    first: Option<Vec<dcbstore::SequencedEvent>>,
    stopping: watch::Receiver<bool>,
    sent_any: bool,
    done: bool,
}

impl Read {
    /// The next response, or `None` once the read has ended.
    async fn next_response(&mut self) -> Option<Result<proto::ReadResponse, Status>> {
        if self.done {
            return None;
        }
        let Some(head) = self.head else {
            // An empty store: one response, without a head.
            return self.finish(None);
        };
        let past_head = !self.backwards && self.next.is_some_and(|n| n > head);
        if *self.stopping.borrow() || self.remaining == 0 || past_head {
            return self.finish(Some(head));
        }
        let want = self.remaining.min(self.batch);
        let page = match self.first.take() {
            Some(first) => Ok(first),
            None => {
                let next = (self.next, self.backwards, u64::from(want));
                self.backend.page(&self.query, next.0, next.1, next.2).await
            }
        };
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                self.done = true;
                return Some(Err(status::from_store(e)));
            }
        };
        let read = page.len();
        let events: Vec<proto::SequencedEvent> = page
            .into_iter()
            .filter(|e| e.position <= head)
            .map(wire::sequenced)
            .collect();
        let Some(last) = events.last().map(|e| e.position) else {
            return self.finish(Some(head));
        };
        let capped = events.len() < read;
        self.remaining = self.remaining.saturating_sub(events.len() as u32);
        self.sent_any = true;
        // The last page: fewer events than asked for, or some above the head.
        self.done = capped || read < want as usize;
        self.next = if self.backwards {
            match last.checked_sub(1) {
                Some(0) | None => {
                    self.done = true;
                    None
                }
                n => n,
            }
        } else {
            Some(last + 1)
        };
        Some(Ok(proto::ReadResponse {
            events,
            // UmaDB's meaning: with a limit, the last position sent; else the head.
            head: if self.limit.is_some() {
                Some(last)
            } else {
                Some(head)
            },
        }))
    }

    /// Ends the read: one empty response if none was sent, so that the client learns the head
    /// (none with a limit, as UmaDB).
    fn finish(&mut self, head: Option<u64>) -> Option<Result<proto::ReadResponse, Status>> {
        self.done = true;
        if self.sent_any {
            return None;
        }
        self.sent_any = true;
        Some(Ok(proto::ReadResponse {
            events: vec![],
            head: if self.limit.is_some() { None } else { head },
        }))
    }
}

/// A subscription: the events after a position, in position order, each once, then the new
/// ones as they settle.
struct Subscription {
    service: Service,
    query: Query,
    /// The first position not yet delivered nor passed.
    next: Option<u64>,
    batch: u32,
    tx: mpsc::Sender<Result<proto::SubscribeResponse, Status>>,
}

impl Subscription {
    async fn run(mut self) {
        let mut appended = self.service.appended.subscribe();
        let mut stopping = self.service.stopping.clone();
        loop {
            appended.borrow_and_update();
            if *stopping.borrow() {
                return;
            }
            match self.deliver().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
            let poll = self.service.poll_interval;
            let shared = self.service.backend.shared();
            tokio::select! {
                _ = appended.changed() => {}
                _ = tokio::time::sleep(poll), if shared => {}
                _ = stopping.changed() => return,
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Sends the next batch up to the settled head. `Ok(true)`: there may be more now.
    async fn deliver(&mut self) -> Result<bool, Status> {
        let batch = u64::from(self.batch);
        let page = self
            .service
            .backend
            .settled_page(&self.query, self.next, batch);
        let (page, head) = page.await.map_err(status::from_store)?;
        let Some(head) = head else {
            return Ok(false);
        };
        let full = page.len() == self.batch as usize;
        let events: Vec<proto::SequencedEvent> = page.into_iter().map(wire::sequenced).collect();
        self.next = match (full, events.last()) {
            (true, Some(last)) => Some(last.position + 1),
            // Every matching event up to the head is delivered: the next one is above it.
            _ => Some(self.next.map_or(head + 1, |n| n.max(head + 1))),
        };
        if !events.is_empty() {
            let response = proto::SubscribeResponse { events };
            let mut stopping = self.service.stopping.clone();
            let sent = tokio::select! {
                sent = self.tx.send(Ok(response)) => sent.is_ok(),
                _ = stopping.changed() => false,
            };
            if !sent {
                return Ok(false);
            }
        }
        Ok(full)
    }
}
