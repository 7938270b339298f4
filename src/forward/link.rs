//! One connection attempt to the broker: a brand-new rumqttc client and event loop, and a task that
//! does nothing but poll that event loop and pass its events on.
//!
//! Why like this (rumqttc 0.25):
//! - `EventLoop::poll` is not cancel-safe (rumqttc issue #601): cancelled in a `select!`, it can take a
//!   publish from the request channel, give it a packet id, and drop it unsent. The id is then never
//!   acknowledged and, once reused, the client's collision state stops all sending. Here `poll` runs in a
//!   task of its own and is never raced against anything.
//! - With a clean session, a publish stashed on a packet-id collision survives the reconnect inside the
//!   event loop (issues #1014, #1056) and blocks it forever. Here an event loop serves exactly one
//!   connection: when it reports an error, it is dropped with everything it held, and the next attempt
//!   gets a fresh client. The store is the outbox, so nothing of the old client's state is needed.
//!
//! The only time a `poll` is ever interrupted is when the link is closed: the task is aborted and its
//! event loop dropped with it, never polled again.

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events buffered between the polling task and the forwarder. When full, the polling task waits
/// (it is never cancelled for it), which back-pressures the socket.
const EVENTS: usize = 1024;

pub struct Link {
    pub client: AsyncClient,
    pub events: mpsc::Receiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
}

impl Link {
    /// Starts connecting (the polling task's first `poll` opens the connection).
    pub fn open(opts: MqttOptions, request_capacity: usize) -> Link {
        let (client, mut eventloop) = AsyncClient::new(opts, request_capacity);
        let (tx, events) = mpsc::channel(EVENTS);
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let end = ev.is_err();
                if tx.send(ev).await.is_err() || end {
                    // The connection is over: this event loop is never polled again.
                    break;
                }
            }
        });
        Link {
            client,
            events,
            task,
        }
    }

    /// Closes the connection for good: the polling task (and with it the event loop and its socket)
    /// is gone when this returns.
    pub async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
