//! Subscription mode: one subscription per session with one monitored item per tag. The library calls
//! our callback with each publish response; the callback only forwards the raw notifications through a
//! bounded channel, and the device task maps them to readings and publishes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeNotification, DataChangeTrigger, DataValue,
    DeadbandType, ExtensionObject, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NotificationMessage, ReadValueId, StatusChangeNotification, StatusCode,
    TimestampsToReturn,
};

use super::config::Deadband;
use super::session::{Connected, LinkEvent};
use super::{End, Runtime};
use crate::reading::Reading;

/// Publish responses buffered between the library's callback and the device task. At 10 publishes per
/// second that is minutes of slack while the store applies back-pressure; beyond it notifications are
/// dropped and counted rather than growing memory without bound.
const CHANNEL_CAPACITY: usize = 2048;

/// Notifications per publish response, well under the client's decoding limit.
const MAX_NOTIFICATIONS_PER_PUBLISH: u32 = (super::session::MAX_ARRAY_LENGTH / 4) as u32;

/// What the callback forwards.
pub(crate) enum Notification {
    /// (client handle, value) pairs from one publish response.
    Data(Vec<(u32, DataValue)>),
    /// The server changed the subscription's state (e.g. `BadTimeout`: it was deleted).
    Status(StatusCode),
}

struct Forwarder {
    tx: flume::Sender<Notification>,
    dropped: Arc<AtomicU64>,
}

impl Forwarder {
    fn send(&self, n: Notification) {
        if let Err(flume::TrySendError::Full(n)) = self.tx.try_send(n) {
            let count = match &n {
                Notification::Data(v) => v.len() as u64,
                Notification::Status(_) => 1,
            };
            self.dropped.fetch_add(count, Ordering::Relaxed);
        }
    }
}

impl OnSubscriptionNotificationCore for Forwarder {
    fn on_subscription_notification(
        &mut self,
        msg: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        for obj in msg.notification_data.into_iter().flatten() {
            if obj.inner_is::<DataChangeNotification>() {
                if let Some(dc) = obj.into_inner_as::<DataChangeNotification>() {
                    let values: Vec<(u32, DataValue)> = dc
                        .monitored_items
                        .into_iter()
                        .flatten()
                        .map(|n| (n.client_handle, n.value))
                        .collect();
                    if !values.is_empty() {
                        self.send(Notification::Data(values));
                    }
                }
            } else if let Some(sc) = obj.inner_as::<StatusChangeNotification>() {
                self.send(Notification::Status(sc.status));
            }
        }
    }
}

/// The state of one tag's monitored item in the current session.
#[derive(Debug, Clone)]
enum Item {
    Pending,
    /// Created, with the server's monitored item id.
    Active(u32),
    /// Created, but the server reports the node as unknown through the item's values (some servers do
    /// that instead of refusing the item): deleted and created again at the next retry.
    Stale(u32),
    Failed(String),
}

/// Item statuses that mean "this node is not there (yet)" rather than "the value is bad".
fn node_missing(status: StatusCode) -> bool {
    use opcua::types::SubStatusCode as S;
    matches!(
        status.sub_code(),
        S::BadNodeIdUnknown | S::BadNodeIdInvalid | S::BadAttributeIdInvalid
    )
}

/// Client handle of tag `i` (0 is reserved by the library for "assign one for me").
fn handle(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}

fn tag_index(handle: u32) -> Option<usize> {
    (handle as usize).checked_sub(1)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Keep-alive count so that an idle subscription still shows it is alive about every 10 s.
fn keep_alive_count(publishing: Duration) -> u32 {
    let per = publishing.as_millis().max(1);
    u32::try_from((10_000u128).div_ceil(per))
        .unwrap_or(u32::MAX)
        .clamp(1, 10_000)
}

pub(crate) async fn serve(rt: &Runtime, conn: &mut Connected) -> End {
    let ctx = &rt.ctx;
    let (tx, rx) = flume::bounded(CHANNEL_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    let keep_alive = keep_alive_count(rt.cfg.publishing_interval);
    let lifetime = keep_alive.saturating_mul(4);
    ctx.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let created = tokio::time::timeout(
        rt.cfg.request_timeout,
        conn.session.create_subscription(
            rt.cfg.publishing_interval,
            lifetime,
            keep_alive,
            // A bounded response size: a backlog after a stall is sent in several responses.
            MAX_NOTIFICATIONS_PER_PUBLISH,
            0,
            true,
            Forwarder {
                tx,
                dropped: dropped.clone(),
            },
        ),
    )
    .await;
    let sub_id = match created {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return End::Lost(format!("CreateSubscription: {}", e.status())),
        Err(_) => {
            ctx.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            return End::Lost("CreateSubscription: timed out".to_string());
        }
    };
    conn.touch();

    let mut items = vec![Item::Pending; rt.tags.len()];
    if let Some(end) = create_items(rt, conn, sub_id, &mut items).await {
        return end;
    }

    // No publish response (data or keep-alive) for this long means the subscription is dead even if the
    // TCP connection looks alive.
    let watchdog_limit = rt.cfg.publishing_interval * keep_alive * 3 + rt.cfg.request_timeout * 2;
    let mut watchdog = tokio::time::interval(Duration::from_secs(1).min(watchdog_limit));
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut retry = tokio::time::interval_at(
        tokio::time::Instant::now() + rt.cfg.retry_failed_items,
        rt.cfg.retry_failed_items,
    );
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reported_drops = 0u64;

    loop {
        let any_failed = items.iter().any(|i| !matches!(i, Item::Active(_)));
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return End::Shutdown,
            ev = conn.events.recv() => {
                return match ev {
                    Some(LinkEvent::Lost(reason)) => End::Lost(reason),
                    None => End::Lost("session event loop stopped".to_string()),
                };
            }
            n = rx.recv_async() => {
                let Ok(n) = n else {
                    return End::Lost("the subscription was removed from the session".to_string());
                };
                conn.touch();
                match n {
                    Notification::Data(values) => {
                        let batch = readings(rt, &mut items, values);
                        if ctx.publish(batch).await.is_err() {
                            return End::SinkClosed;
                        }
                    }
                    Notification::Status(status) if status.is_bad() => {
                        return End::Lost(format!("the server ended the subscription: {status}"));
                    }
                    Notification::Status(_) => {}
                }
            }
            _ = retry.tick(), if any_failed => {
                if items.iter().any(|i| matches!(i, Item::Failed(_) | Item::Stale(_))) {
                    // A node may be missing because the namespace is not there yet (server still loading).
                    if rt.tags.iter().any(|t| t.node.needs_namespace_array())
                        && let Err(e) = conn.refresh_namespaces(rt.cfg.request_timeout).await
                    {
                        tracing::debug!(error = %e, "opcua: namespace array refresh failed");
                    }
                    let stale: Vec<u32> = items
                        .iter()
                        .filter_map(|i| match i {
                            Item::Stale(id) => Some(*id),
                            _ => None,
                        })
                        .collect();
                    if !stale.is_empty() {
                        ctx.metrics.requests.fetch_add(1, Ordering::Relaxed);
                        let call = conn.session.delete_monitored_items(sub_id, &stale);
                        match tokio::time::timeout(rt.cfg.request_timeout, call).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return End::Lost(format!("DeleteMonitoredItems: {}", e.status())),
                            Err(_) => {
                                ctx.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                                return End::Lost("DeleteMonitoredItems: timed out".to_string());
                            }
                        }
                    }
                    for item in items.iter_mut() {
                        if matches!(item, Item::Failed(_) | Item::Stale(_)) {
                            *item = Item::Pending;
                        }
                    }
                    if let Some(end) = create_items(rt, conn, sub_id, &mut items).await {
                        return end;
                    }
                }
            }
            _ = watchdog.tick() => {
                let silent = conn.since_last_publish();
                if silent > watchdog_limit {
                    return End::Lost(format!(
                        "no publish response for {}s: the subscription is dead",
                        silent.as_secs()
                    ));
                }
                let d = dropped.load(Ordering::Relaxed);
                if d > reported_drops {
                    ctx.metrics.errors.fetch_add(d - reported_drops, Ordering::Relaxed);
                    let msg = format!("{d} data changes dropped: the store is not keeping up");
                    tracing::warn!(device = %ctx.metrics.device, "opcua: {msg}");
                    ctx.metrics.set_last_error(msg);
                    reported_drops = d;
                }
            }
        }
    }
}

/// Maps one publish response to readings; items whose values say the node is missing are marked for
/// re-creation.
fn readings(rt: &Runtime, items: &mut [Item], values: Vec<(u32, DataValue)>) -> Vec<Reading> {
    let received = Utc::now();
    let mut out = Vec::with_capacity(values.len());
    for (h, dv) in values {
        let Some(i) = tag_index(h).filter(|i| *i < rt.shapes.len()) else {
            tracing::debug!(
                handle = h,
                "opcua: notification for an unknown client handle"
            );
            continue;
        };
        if let Some(status) = dv.status.filter(|s| s.is_bad()) {
            rt.ctx.metrics.exceptions.fetch_add(1, Ordering::Relaxed);
            if node_missing(status)
                && let Some(Item::Active(id)) = items.get(i)
            {
                items[i] = Item::Stale(*id);
            }
        } else if let Some(Item::Stale(id)) = items.get(i) {
            // The node is back: keep the item.
            items[i] = Item::Active(*id);
        }
        if let Some(shape) = rt.shapes.get(i) {
            shape.map(&dv, received, &mut out);
        }
    }
    out
}

fn filter(deadband: Option<Deadband>) -> ExtensionObject {
    let (kind, value) = match deadband {
        None => return ExtensionObject::null(),
        Some(Deadband::Absolute(v)) => (DeadbandType::Absolute, v),
        Some(Deadband::Percent(v)) => (DeadbandType::Percent, v),
    };
    ExtensionObject::from_message(DataChangeFilter {
        trigger: DataChangeTrigger::StatusValue,
        deadband_type: kind as u32,
        deadband_value: value,
    })
}

/// Creates the monitored items of every `Pending` tag; failures become bad readings and are retried
/// later. Returns `Some(end)` when the session is unusable or the agent is stopping.
async fn create_items(
    rt: &Runtime,
    conn: &mut Connected,
    sub_id: u32,
    items: &mut [Item],
) -> Option<End> {
    let ctx = &rt.ctx;
    let now = Utc::now();
    let mut bad = Vec::new();
    let mut requests: Vec<(usize, MonitoredItemCreateRequest)> = Vec::new();
    for (i, tag) in rt.tags.iter().enumerate() {
        if !matches!(items.get(i), Some(Item::Pending)) {
            continue;
        }
        match tag.node.resolve(&conn.namespaces) {
            Ok(node_id) => requests.push((
                i,
                MonitoredItemCreateRequest {
                    item_to_monitor: ReadValueId {
                        node_id,
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    },
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        client_handle: handle(i),
                        sampling_interval: ms(tag.sampling_interval),
                        filter: filter(tag.deadband),
                        queue_size: tag.queue_size,
                        discard_oldest: true,
                    },
                },
            )),
            Err(reason) => {
                items[i] = Item::Failed(reason.to_string());
                if let Some(shape) = rt.shapes.get(i) {
                    shape.bad(
                        now,
                        &Arc::from(format!("node {}: {reason}", tag.node)),
                        &mut bad,
                    );
                }
            }
        }
    }
    let chunk = rt.cfg.max_nodes_per_request.max(1) as usize;
    for part in requests.chunks(chunk) {
        ctx.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let call = conn.session.create_monitored_items(
            sub_id,
            TimestampsToReturn::Both,
            part.iter().map(|(_, r)| r.clone()).collect(),
        );
        let result = match tokio::time::timeout(rt.cfg.request_timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Some(End::Lost(format!("CreateMonitoredItems: {}", e.status()))),
            Err(_) => {
                ctx.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                return Some(End::Lost("CreateMonitoredItems: timed out".to_string()));
            }
        };
        for (k, (i, _)) in part.iter().enumerate() {
            let (status, id) = result
                .get(k)
                .map(|r| (r.result.status_code, r.result.monitored_item_id))
                .unwrap_or((StatusCode::BadUnexpectedError, 0));
            if status.is_good() {
                items[*i] = Item::Active(id);
            } else {
                ctx.metrics.exceptions.fetch_add(1, Ordering::Relaxed);
                items[*i] = Item::Failed(status.to_string());
                if let (Some(shape), Some(tag)) = (rt.shapes.get(*i), rt.tags.get(*i)) {
                    shape.bad(
                        now,
                        &Arc::from(format!("node {}: {status}", tag.node)),
                        &mut bad,
                    );
                }
            }
        }
    }
    let failed = items
        .iter()
        .filter(|i| matches!(i, Item::Failed(_)))
        .count();
    if failed > 0 {
        let detail: Vec<String> = rt
            .tags
            .iter()
            .zip(items.iter())
            .filter_map(|(t, i)| match i {
                Item::Failed(reason) => Some(format!("{} ({}): {reason}", t.name, t.node)),
                _ => None,
            })
            .take(5)
            .collect();
        let msg = format!(
            "{failed} of {} monitored items not created, retried every {}: {}",
            items.len(),
            humantime::format_duration(rt.cfg.retry_failed_items),
            detail.join("; ")
        );
        tracing::warn!(device = %ctx.metrics.device, "opcua: {msg}");
        ctx.metrics.set_last_error(msg);
    }
    if ctx.publish(bad).await.is_err() {
        return Some(End::SinkClosed);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_map_back_to_tags() {
        assert_eq!(handle(0), 1);
        assert_eq!(tag_index(handle(41)), Some(41));
        assert_eq!(tag_index(0), None);
    }

    #[test]
    fn keep_alive_is_about_ten_seconds() {
        assert_eq!(keep_alive_count(Duration::from_millis(100)), 100);
        assert_eq!(keep_alive_count(Duration::from_secs(1)), 10);
        assert_eq!(keep_alive_count(Duration::from_secs(60)), 1);
    }

    #[test]
    fn deadband_filters() {
        assert!(filter(None).is_null());
        let f = filter(Some(Deadband::Percent(2.0)));
        let dc = f.inner_as::<DataChangeFilter>().unwrap();
        assert_eq!(dc.deadband_type, DeadbandType::Percent as u32);
        assert_eq!(dc.deadband_value, 2.0);
    }
}
