//! Polled mode: read every tag's Value attribute every `poll_interval`, in requests of at most
//! `max_nodes_per_request` nodes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use opcua::types::{AttributeId, NodeId, ReadValueId, TimestampsToReturn};

use super::session::{Connected, LinkEvent};
use super::{End, Runtime};

/// Consecutive failed read cycles after which the session is rebuilt (a request failing three times in a
/// row while the link claims to be up means the session is wedged).
const MAX_FAILED_CYCLES: u32 = 3;

pub(crate) async fn serve(rt: &Runtime, conn: &mut Connected) -> End {
    let ctx = &rt.ctx;
    let mut resolved: Vec<Result<NodeId, Arc<str>>> = resolve_all(rt, conn);
    let mut ticker = tokio::time::interval(rt.cfg.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_refresh = tokio::time::Instant::now();
    let mut failed_cycles = 0u32;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return End::Shutdown,
            ev = conn.events.recv() => {
                return match ev {
                    Some(LinkEvent::Lost(reason)) => End::Lost(reason),
                    None => End::Lost("session event loop stopped".to_string()),
                };
            }
            _ = ticker.tick() => {}
        }
        // Namespaces missing at connect may appear later (server still loading its model).
        if resolved.iter().any(|r| r.is_err())
            && last_refresh.elapsed() >= rt.cfg.retry_failed_items
        {
            last_refresh = tokio::time::Instant::now();
            if conn
                .refresh_namespaces(rt.cfg.request_timeout)
                .await
                .is_ok()
            {
                resolved = resolve_all(rt, conn);
            }
        }
        match read_cycle(rt, conn, &resolved).await {
            Ok(batch) => {
                failed_cycles = 0;
                if ctx.publish(batch).await.is_err() {
                    return End::SinkClosed;
                }
            }
            Err((batch, reason)) => {
                failed_cycles += 1;
                ctx.metrics.set_last_error(reason.to_string());
                if ctx.publish(batch).await.is_err() {
                    return End::SinkClosed;
                }
                if failed_cycles >= MAX_FAILED_CYCLES {
                    return End::Lost(format!(
                        "{failed_cycles} read cycles failed in a row: {reason}"
                    ));
                }
            }
        }
    }
}

fn resolve_all(rt: &Runtime, conn: &Connected) -> Vec<Result<NodeId, Arc<str>>> {
    rt.tags
        .iter()
        .map(|t| {
            t.node
                .resolve(&conn.namespaces)
                .map_err(|e| Arc::from(format!("node {}: {e}", t.node)))
        })
        .collect()
}

/// Why a whole Read request of a poll gave no values; the text is the reason of its tags' readings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ReadFailure {
    #[error("read failed: {0}")]
    Status(opcua::types::StatusCode),
    #[error("read timed out")]
    Timeout,
}

/// One poll: readings for every tag. `Err` carries the readings (bad for the failed requests) and the
/// reason when a whole request failed.
async fn read_cycle(
    rt: &Runtime,
    conn: &Connected,
    resolved: &[Result<NodeId, Arc<str>>],
) -> Result<Vec<crate::reading::Reading>, (Vec<crate::reading::Reading>, ReadFailure)> {
    let ctx = &rt.ctx;
    let mut out = Vec::with_capacity(rt.shapes.len());
    let mut todo: Vec<(usize, ReadValueId)> = Vec::with_capacity(resolved.len());
    let now = Utc::now();
    for (i, r) in resolved.iter().enumerate() {
        match r {
            Ok(node_id) => todo.push((
                i,
                ReadValueId {
                    node_id: node_id.clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                },
            )),
            Err(reason) => {
                if let Some(shape) = rt.shapes.get(i) {
                    shape.bad(now, reason, &mut out);
                }
            }
        }
    }
    let mut failure = None;
    let chunk = rt.cfg.max_nodes_per_request.max(1) as usize;
    for part in todo.chunks(chunk) {
        ctx.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<ReadValueId> = part.iter().map(|(_, r)| r.clone()).collect();
        let call = conn.session.read(&ids, TimestampsToReturn::Both, 0.0);
        let outcome = tokio::time::timeout(rt.cfg.request_timeout, call).await;
        let received = Utc::now();
        match outcome {
            Ok(Ok(values)) => {
                for (k, (i, _)) in part.iter().enumerate() {
                    let Some(shape) = rt.shapes.get(*i) else {
                        continue;
                    };
                    match values.get(k) {
                        Some(dv) => {
                            if dv.status.is_some_and(|s| s.is_bad()) {
                                ctx.metrics.exceptions.fetch_add(1, Ordering::Relaxed);
                            }
                            shape.map(dv, received, &mut out);
                        }
                        None => shape.bad(
                            received,
                            &Arc::from("the server returned fewer results than asked"),
                            &mut out,
                        ),
                    }
                }
            }
            Ok(Err(e)) => {
                ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
                let why = ReadFailure::Status(e.status());
                let reason: Arc<str> = Arc::from(why.to_string());
                for (i, _) in part {
                    if let Some(shape) = rt.shapes.get(*i) {
                        shape.bad(received, &reason, &mut out);
                    }
                }
                failure = Some(why);
            }
            Err(_) => {
                ctx.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                let why = ReadFailure::Timeout;
                let reason: Arc<str> = Arc::from(why.to_string());
                for (i, _) in part {
                    if let Some(shape) = rt.shapes.get(*i) {
                        shape.bad(received, &reason, &mut out);
                    }
                }
                failure = Some(why);
            }
        }
    }
    match failure {
        None => Ok(out),
        Some(reason) => Err((out, reason)),
    }
}
