//! The live feed: server-sent events from the hub. One stream per browser tab, limited in number;
//! `?ch=NAME` narrows it to one characteristic. A browser that reconnects sends `Last-Event-ID` and
//! gets what it missed, or a `reset` event when it was away too long (it then reloads its snapshot).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use super::http::{StreamCount, StreamParams};
use super::hub::FeedEvent;

/// Counts a stream while it is open.
struct Slot(StreamCount);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn event(e: &FeedEvent) -> Event {
    let ev = Event::default().event(e.kind).data(&e.data);
    if e.id > 0 {
        ev.id(e.id.to_string())
    } else {
        ev
    }
}

fn wanted(e: &FeedEvent, ch: Option<&str>) -> bool {
    match (ch, &e.characteristic) {
        // The device summary is for the pages without a characteristic.
        (Some(_), None) => false,
        (None, _) => true,
        (Some(want), Some(c)) => **c == *want,
    }
}

pub async fn stream(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): StreamParams,
    headers: HeaderMap,
) -> Response {
    let count = shared.streams.clone();
    if count.fetch_add(1, Ordering::Relaxed) >= shared.cfg.max_streams {
        count.fetch_sub(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many live streams").into_response();
    }
    let slot = Slot(count);
    if q.ch.as_deref().is_some_and(|c| !shared.hub.knows(c)) {
        return (StatusCode::NOT_FOUND, "no such characteristic").into_response();
    }
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let sub = shared.hub.subscribe(last);
    let ch = q.ch;
    let mut first: Vec<Event> = Vec::new();
    // The browser's EventSource retries after this long when the connection drops.
    first.push(
        Event::default()
            .retry(Duration::from_millis(500))
            .comment("hello"),
    );
    if sub.reset {
        first.push(
            Event::default()
                .event("reset")
                .data("{}")
                .id(sub.head.to_string()),
        );
    }
    first.extend(
        sub.missed
            .iter()
            .filter(|e| wanted(e, ch.as_deref()))
            .map(|e| event(e)),
    );
    let head = stream::iter(first.into_iter().map(Ok::<_, std::convert::Infallible>));
    let live = stream::unfold((sub.rx, ch, slot), |(mut rx, ch, slot)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if wanted(&e, ch.as_deref()) => {
                    return Some((Ok(event(&e)), (rx, ch, slot)));
                }
                Ok(_) => continue,
                // Too slow to keep up: start over from a fresh snapshot.
                Err(RecvError::Lagged(_)) => {
                    return Some((
                        Ok(Event::default().event("reset").data("{}")),
                        (rx, ch, slot),
                    ));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(futures_util::StreamExt::chain(head, live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
