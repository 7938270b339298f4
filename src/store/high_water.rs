//! The high-water marks writer, and the bound it gives the forwarder.
//!
//! The marks file (see `identity`) is what lets a restart notice a database that lost committed data.
//! That only protects subscribers if nothing they have seen lies above the marks: a WAL lost right after
//! a checkpoint takes the database back to the checkpoint, and if the marks said the same, seqs already
//! forwarded would be handed out again for different readings. So the marks lead and the forwarder
//! follows: a thread of its own rewrites the marks file (temporary file, fsync, rename) as soon as a newer
//! commit exists — one write in flight at a time, the next one covering everything committed meanwhile —
//! and only then publishes the marks as **durable** ([`HighWater::watch_durable`]) and hands the
//! batches they cover to the forwarder's fast path ([`HighWater::subscribe_batches`]). The forwarder
//! packs and publishes nothing above the durable marks. The cost is one small fsync between a commit and
//! its publication; commits that arrive during it share the next one.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use super::Committed;
use super::identity::write_marks;
use super::model::CommittedBatch;

/// How long a failed write waits before it is tried again when nothing newer is due.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long [`HighWater::ensure_durable`] waits for the thread at most: a hung fsync must not stop the
/// writer for good.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Committed batches held for the fast path while the marks do not cover them yet. Past this (the marks
/// cannot be written) they are let go: the forwarder reads them back from the store once they are
/// covered.
const MAX_HELD_BATCHES: usize = 1024;
/// Durable batches the forwarder's fast path may fall behind by (it then reads from the store).
const BATCH_CHANNEL: usize = 1024;

/// What the writer asked for and what the thread has done.
#[derive(Default)]
struct Due {
    /// The latest committed seqs.
    want: Committed,
    /// Committed batches not yet covered by a durable write, oldest first.
    batches: Vec<Arc<CommittedBatch>>,
    /// The last value a write was tried for (successfully or not).
    attempted: Committed,
    stop: bool,
}

struct Shared {
    due: Mutex<Due>,
    /// Something new is due (or the thread must stop).
    work: Condvar,
    /// A write was tried.
    done: Condvar,
    durable: watch::Sender<Committed>,
    batches: broadcast::Sender<Arc<CommittedBatch>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Due> {
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps the marks file current and tells the forwarder how far it may go.
pub struct HighWater {
    shared: Arc<Shared>,
    target: Target,
    thread: Option<JoinHandle<()>>,
    /// Without a thread (it could not be started): writes happen on the caller's thread.
    inline_failing: bool,
}

/// Where and for which epoch the marks are written.
#[derive(Clone)]
struct Target {
    path: PathBuf,
    epoch: u64,
}

impl HighWater {
    /// Starts the thread. Nothing is durable until the first write (see [`HighWater::ensure_durable`]).
    pub fn new(path: PathBuf, epoch: u64) -> Self {
        let (durable, _) = watch::channel(Committed::default());
        let (batches, _) = broadcast::channel(BATCH_CHANNEL);
        let shared = Arc::new(Shared {
            due: Mutex::new(Due::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            durable,
            batches,
        });
        let target = Target { path, epoch };
        let (s, t) = (shared.clone(), target.clone());
        let thread = std::thread::Builder::new()
            .name("store-highwater".into())
            .spawn(move || run(&s, &t))
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot start the high-water thread; the marks are written by the store writer itself")
            })
            .ok();
        HighWater {
            shared,
            target,
            thread,
            inline_failing: false,
        }
    }

    /// The marks as they are on disk: the forwarder publishes nothing above them.
    pub fn watch_durable(&self) -> watch::Receiver<Committed> {
        self.shared.durable.subscribe()
    }

    /// Committed batches once the marks cover them, in commit order (the forwarder's fast path).
    pub fn batches(&self) -> broadcast::Sender<Arc<CommittedBatch>> {
        self.shared.batches.clone()
    }

    /// Records newly committed seqs (and the batch that committed them, for the fast path); the thread
    /// writes them as soon as it is free.
    pub fn update(&mut self, committed: Committed, batch: Option<Arc<CommittedBatch>>) {
        {
            let mut due = self.shared.lock();
            due.want = due.want.max(committed);
            if let Some(b) = batch {
                if due.batches.len() >= MAX_HELD_BATCHES {
                    due.batches.clear();
                }
                due.batches.push(b);
            }
        }
        if self.thread.is_some() {
            self.shared.work.notify_one();
        } else {
            write_due(&self.shared, &self.target, &mut self.inline_failing);
        }
    }

    /// Makes the marks cover `committed` before returning (a write was at least tried): before a
    /// checkpoint moves WAL pages into the database file, the marks must cover them, so that a lost WAL
    /// afterwards still shows as a database behind its marks.
    pub fn ensure_durable(&mut self, committed: Committed) {
        self.update(committed, None);
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut due = self.shared.lock();
        while self.thread.is_some() && !due.attempted.covers(committed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "the high-water marks were not written within {}s",
                    WAIT_LIMIT.as_secs()
                );
                return;
            }
            due = self
                .shared
                .done
                .wait_timeout(due, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Writes what is due and stops the thread (a clean stop).
    pub fn finish(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the high-water thread panicked");
        }
    }
}

impl Drop for HighWater {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The thread: wait for something newer than the last attempt (or a retry), write it, publish it.
fn run(shared: &Shared, target: &Target) {
    let mut failing = false;
    loop {
        {
            let mut due = shared.lock();
            loop {
                if due.want != due.attempted {
                    break;
                }
                if due.stop {
                    return;
                }
                if failing {
                    let (d, timeout) = shared
                        .work
                        .wait_timeout(due, RETRY_AFTER)
                        .unwrap_or_else(PoisonError::into_inner);
                    due = d;
                    if timeout.timed_out() && !due.stop {
                        break;
                    }
                } else {
                    due = shared
                        .work
                        .wait(due)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
        write_due(shared, target, &mut failing);
    }
}

/// One write of the latest due marks; on success they become durable and the batches they cover go to
/// the forwarder.
fn write_due(shared: &Shared, target: &Target, failing: &mut bool) {
    let (want, batches) = {
        let mut due = shared.lock();
        (due.want, std::mem::take(&mut due.batches))
    };
    let ok = write_logged(target, want, failing);
    if ok {
        // The batches first: a forwarder that is caught up packs them from memory and then finds
        // nothing left to read when the new bound arrives.
        for b in batches {
            let _ = shared.batches.send(b);
        }
        shared.durable.send_if_modified(|d| {
            let new = d.max(want);
            let changed = new != *d;
            *d = new;
            changed
        });
        shared.lock().attempted = want;
    } else {
        let mut due = shared.lock();
        due.attempted = want;
        // Kept for when a write succeeds; newer batches behind them.
        let newer = std::mem::replace(&mut due.batches, batches);
        due.batches.extend(newer);
        if due.batches.len() > MAX_HELD_BATCHES {
            due.batches.clear();
        }
    }
    // After the bound is published: `ensure_durable` returns with the marks on disk and announced.
    shared.done.notify_all();
}

fn write_logged(target: &Target, marks: Committed, failing: &mut bool) -> bool {
    match write_marks(&target.path, target.epoch, marks.readings, marks.events) {
        Ok(()) => {
            if *failing {
                tracing::info!(path = %target.path.display(), "the store's high-water marks are written again; forwarding goes on");
                *failing = false;
            }
            true
        }
        Err(e) => {
            if !*failing {
                *failing = true;
                tracing::error!(path = %target.path.display(), error = %e, "cannot write the store's high-water marks: nothing newer is forwarded until they are written (retried every second)");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::identity::{marks_path, read_marks};
    use super::*;

    fn c(readings: u64, events: u64) -> Committed {
        Committed { readings, events }
    }

    #[test]
    fn the_marks_lead_and_the_durable_bound_follows() {
        let dir = tempfile::tempdir().unwrap();
        let p = marks_path(&dir.path().join("x.db"));
        let mut hw = HighWater::new(p.clone(), 42);
        let durable = hw.watch_durable();
        let mut batches = hw.batches().subscribe();
        assert_eq!(
            *durable.borrow(),
            c(0, 0),
            "nothing is durable before a write"
        );
        hw.ensure_durable(c(10, 3));
        assert_eq!(read_marks(&p), Some((42, 10, 3)));
        assert_eq!(*durable.borrow(), c(10, 3));
        let batch = Arc::new(CommittedBatch {
            first_seq: 11,
            readings: Vec::new(),
        });
        hw.update(c(11, 3), Some(batch.clone()));
        hw.ensure_durable(c(11, 3));
        // Published once written: the batch, and the bound.
        assert_eq!(read_marks(&p), Some((42, 11, 3)));
        assert_eq!(*durable.borrow(), c(11, 3));
        assert_eq!(batches.try_recv().unwrap().first_seq, 11);
        hw.update(c(12, 4), None);
        hw.finish();
        assert_eq!(
            read_marks(&p),
            Some((42, 12, 4)),
            "a clean stop writes what is due"
        );
    }

    #[test]
    fn nothing_becomes_durable_while_the_marks_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the marks file should be: every write fails.
        let p = dir.path().join("blocked");
        std::fs::create_dir(&p).unwrap();
        let mut hw = HighWater::new(p.clone(), 7);
        let durable = hw.watch_durable();
        let mut batches = hw.batches().subscribe();
        let batch = Arc::new(CommittedBatch {
            first_seq: 1,
            readings: Vec::new(),
        });
        hw.update(c(5, 0), Some(batch));
        hw.ensure_durable(c(5, 0));
        assert_eq!(*durable.borrow(), c(0, 0));
        assert!(batches.try_recv().is_err());
        // Once the marks can be written, the held batch and the bound follow (the retry).
        std::fs::remove_dir(&p).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while durable.borrow().readings < 5 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(*durable.borrow(), c(5, 0));
        assert_eq!(batches.try_recv().unwrap().first_seq, 1);
        hw.finish();
    }
}
