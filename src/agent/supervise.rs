//! Supervision: every long-lived task is spawned through a [`Supervisor`], which notices when one ends
//! while nobody asked it to (returned, failed or panicked). The agent then logs which task and why and
//! stops with an error, so systemd restarts it: a process with a dead forwarder or SPC task must not look
//! alive. The [`Health`] registry is what the systemd watchdog consults before each ping.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A named health check: `Err(reason)` withholds the watchdog ping.
type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The checks the systemd watchdog runs before each ping. Cheap to clone; add a check with one line:
/// `health.add("forwarder", move || stats.healthy(Instant::now()))`.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<Vec<(String, Check)>>>,
}

impl Health {
    pub fn add(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.push((name.into(), Box::new(check)));
    }

    /// Every failing check as "name: reason"; empty when all hold.
    pub fn failing(&self) -> Vec<String> {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks
            .iter()
            .filter_map(|(name, check)| check().err().map(|why| format!("{name}: {why}")))
            .collect()
    }
}

/// How a supervised task ended when it was not asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDied {
    pub task: String,
    pub cause: String,
}

impl std::fmt::Display for TaskDied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task `{}` {}", self.task, self.cause)
    }
}

/// What a task's output says about how it ended.
pub trait TaskOutput {
    /// The error it ended with, if any.
    fn failure(&self) -> Option<String>;
}

impl TaskOutput for () {
    fn failure(&self) -> Option<String> {
        None
    }
}

impl<T, E: std::fmt::Display> TaskOutput for Result<T, E> {
    fn failure(&self) -> Option<String> {
        self.as_ref().err().map(|e| format!("{e:#}"))
    }
}

#[derive(Clone)]
pub struct Supervisor {
    died: mpsc::UnboundedSender<TaskDied>,
    /// Cancelled when the agent stops: from then on every end is expected.
    stopping: CancellationToken,
    dead: Arc<Mutex<Vec<TaskDied>>>,
}

/// The receiving end: the agent's main loop waits on it.
pub struct Deaths(mpsc::UnboundedReceiver<TaskDied>);

impl Deaths {
    /// The next task that died; pending forever if none does.
    pub async fn next(&mut self) -> TaskDied {
        match self.0.recv().await {
            Some(d) => d,
            None => std::future::pending().await,
        }
    }
}

impl Supervisor {
    pub fn new(health: &Health) -> (Supervisor, Deaths) {
        let (died, rx) = mpsc::unbounded_channel();
        let sup = Supervisor {
            died,
            stopping: CancellationToken::new(),
            dead: Arc::default(),
        };
        let dead = sup.dead.clone();
        health.add("tasks", move || {
            let dead = dead.lock().unwrap_or_else(|p| p.into_inner());
            match dead.first() {
                None => Ok(()),
                Some(d) => Err(d.to_string()),
            }
        });
        (sup, Deaths(rx))
    }

    /// From now on tasks are expected to end (the agent is stopping).
    pub fn stopping(&self) {
        self.stopping.cancel();
    }

    /// Spawns a task that runs until the agent stops.
    pub fn spawn<F>(&self, name: impl Into<String>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput + Send + 'static,
    {
        self.spawn_until(name, &self.stopping.clone(), fut)
    }

    /// Spawns a task that runs until `stop` is cancelled (or the agent stops). Ending any earlier is
    /// reported; a panic is reported and then passed on to whoever awaits the handle, as before.
    pub fn spawn_until<F>(
        &self,
        name: impl Into<String>,
        stop: &CancellationToken,
        fut: F,
    ) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput + Send + 'static,
    {
        let name = name.into();
        let stop = stop.clone();
        let me = self.clone();
        let fault = injected_fault(&name);
        let stuck = std::env::var(STUCK_ENV).is_ok_and(|t| t == name);
        tokio::spawn(async move {
            let ended = CatchUnwind(Box::pin(async move {
                if let Some(after) = fault {
                    tokio::time::sleep(after).await;
                    panic!("fault injected by {FAULT_ENV}");
                }
                let out = fut.await;
                if stuck {
                    std::future::pending::<()>().await;
                }
                out
            }))
            .await;
            let expected = stop.is_cancelled() || me.stopping.is_cancelled();
            match ended {
                Ok(out) => {
                    if !expected {
                        let cause = match out.failure() {
                            Some(e) => format!("failed: {e}"),
                            None => "ended unexpectedly".to_string(),
                        };
                        me.report(TaskDied { task: name, cause });
                    }
                    out
                }
                Err(panic) => {
                    me.report(TaskDied {
                        task: name,
                        cause: format!("panicked: {}", panic_message(panic.as_ref())),
                    });
                    std::panic::resume_unwind(panic)
                }
            }
        })
    }

    fn report(&self, died: TaskDied) {
        tracing::error!(task = %died.task, cause = %died.cause, "a supervised task died");
        self.dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(died.clone());
        let _ = self.died.send(died);
    }
}

/// Test-only fault injection for the supervision tests: `LINESIDE_FAULT_PANIC=<task>[@<ms>]` makes the
/// task of that name panic after `ms` (default 500) milliseconds. Unset in production.
const FAULT_ENV: &str = "LINESIDE_FAULT_PANIC";
/// Test-only: `LINESIDE_FAULT_STUCK=<task>` makes that task never end, even when asked to (a hung
/// shutdown phase). Unset in production.
const STUCK_ENV: &str = "LINESIDE_FAULT_STUCK";

fn injected_fault(task: &str) -> Option<std::time::Duration> {
    let spec = std::env::var(FAULT_ENV).ok()?;
    let (name, ms) = match spec.split_once('@') {
        Some((n, ms)) => (n.to_string(), ms.parse().unwrap_or(500)),
        None => (spec, 500),
    };
    (name == task).then(|| std::time::Duration::from_millis(ms))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Polls a future and turns a panic inside it into an `Err` with the panic's payload.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_or_an_early_end_is_reported_with_the_task_name() {
        let health = Health::default();
        let (sup, mut deaths) = Supervisor::new(&health);
        assert!(health.failing().is_empty());
        let seven = 7;
        let h = sup.spawn("spc", async move {
            if seven == 7 {
                panic!("boom at {seven}");
            }
        });
        let died = deaths.next().await;
        assert_eq!(died.task, "spc");
        assert_eq!(died.cause, "panicked: boom at 7");
        assert!(
            h.await.unwrap_err().is_panic(),
            "the panic still reaches the handle"
        );
        assert_eq!(health.failing(), ["tasks: task `spc` panicked: boom at 7"]);

        sup.spawn("forwarder", async {
            Err::<(), _>(anyhow::anyhow!("store gone"))
        });
        assert_eq!(deaths.next().await.cause, "failed: store gone");
    }

    #[tokio::test]
    async fn an_end_asked_for_is_not_reported() {
        let health = Health::default();
        let (sup, mut deaths) = Supervisor::new(&health);
        let stop = CancellationToken::new();
        let s = stop.clone();
        let h = sup.spawn_until("forwarder", &stop, async move { s.cancelled().await });
        stop.cancel();
        h.await.unwrap();
        sup.stopping();
        sup.spawn("relay", async {}).await.unwrap();
        let none = tokio::time::timeout(std::time::Duration::from_millis(50), deaths.next()).await;
        assert!(none.is_err(), "{none:?}");
        assert!(health.failing().is_empty());
    }
}
