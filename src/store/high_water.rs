//! The high-water marks writer, and the bound it gives the forwarder.
//!
//! The marks file (see `identity`) is what lets a restart notice a database that lost committed data,
//! and what keeps a restart from handing out a seq a subscriber has already seen. Subscribers are only
//! protected if nothing they have seen lies above what the file promises: a WAL lost right after a
//! checkpoint takes the database back, and seqs already forwarded must not be handed out again for
//! different readings.
//!
//! So the file holds two things per stream:
//! - **committed**: what was committed when it was written (a restart whose database is below it lost
//!   data: new epoch, `agent.store_reset`);
//! - **reserved**: a ceiling *ahead* of the committed seqs (a block of seqs reserved at once, like a
//!   database sequence cache). The forwarder may publish any committed seq up to the reservation on
//!   disk, and a restart after an unclean stop continues above it, so no seq it could have published is
//!   reused.
//!
//! A commit inside the reservation is handed to the forwarder at once, on the writer's thread: no file
//! write, no fsync, no thread hop. A thread of its own extends the reservation (temporary file, fsync,
//! rename) when fewer than half a step is left, with a step of about two seconds of the current rate, so
//! at any rate the file is written about once a second; it also refreshes the committed marks once a
//! second while they change, and writes them at once when asked ([`HighWater::ensure_durable`]: at
//! start, before every checkpoint, at a flush). A commit beyond the reservation (a burst faster than the
//! extension) is held until the next write covers it. A clean stop writes the reservation back down to
//! the committed seqs, so a clean restart continues without a gap.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use super::Committed;
use super::identity::{Marks, write_marks};
use super::model::CommittedBatch;

/// How long a failed write waits before it is tried again when nothing newer is due.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the committed marks are rewritten while they change (what a lost tail is detected against).
const REFRESH: Duration = Duration::from_secs(1);
/// How long [`HighWater::ensure_durable`] waits for the thread at most: a hung fsync must not stop the
/// writer for good.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Committed batches held for the fast path while the reservation does not cover them yet. Past this
/// (the marks cannot be written) they are let go: the forwarder reads them back from the store once they
/// are covered.
const MAX_HELD_BATCHES: usize = 1024;
/// Durable batches the forwarder's fast path may fall behind by (it then reads from the store).
const BATCH_CHANNEL: usize = 1024;
/// The reservation step of each stream: at least this many seqs, at most `MAX_STEP`, else about
/// `STEP_SECONDS` of the rate seen since the last extension.
const MIN_STEP: Committed = Committed {
    readings: 16_384,
    events: 256,
};
const MAX_STEP: Committed = Committed {
    readings: 4 << 20,
    events: 1 << 16,
};
const STEP_SECONDS: f64 = 2.0;

/// What the writer asked for and what the thread has done.
struct Due {
    /// The latest committed seqs.
    want: Committed,
    /// Committed batches not yet covered by the reservation on disk, oldest first.
    batches: Vec<Arc<CommittedBatch>>,
    /// The committed seqs of the last write tried (successfully or not).
    attempted: Committed,
    /// The reservation on disk (0 until the first write).
    reserved: Committed,
    /// A write of the committed seqs is wanted now (`ensure_durable`), not at the next refresh.
    urgent: bool,
    /// When the last write happened, and the committed seqs at the last extension (for the step).
    last_write: Instant,
    extended: (Instant, Committed),
    /// Stop with the reservation written down to the committed seqs.
    stop: bool,
}

impl Due {
    /// Whether the reservation must grow: less than half a step left in a stream.
    fn needs_extension(&self) -> bool {
        if self.reserved.readings <= self.want.readings || self.reserved.events <= self.want.events
        {
            return true;
        }
        let step = self.step();
        self.reserved.readings - self.want.readings < step.readings / 2
            || self.reserved.events - self.want.events < step.events / 2
    }

    /// About `STEP_SECONDS` of the reading rate since the last extension, within the bounds.
    fn step(&self) -> Committed {
        let (at, from) = self.extended;
        let secs = at.elapsed().as_secs_f64().max(0.001);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let bound = |r: f64, min: u64, max: u64| ((r * STEP_SECONDS) as u64).clamp(min, max);
        Committed {
            readings: bound(
                rate(self.want.readings, from.readings),
                MIN_STEP.readings,
                MAX_STEP.readings,
            ),
            events: bound(
                rate(self.want.events, from.events),
                MIN_STEP.events,
                MAX_STEP.events,
            ),
        }
    }

    /// Whether the thread has a write to do now.
    fn write_due(&self) -> bool {
        self.needs_extension()
            || (self.want != self.attempted
                && (self.urgent || self.last_write.elapsed() >= REFRESH))
    }

    /// What the forwarder may publish: committed and inside the reservation on disk.
    fn durable(&self) -> Committed {
        Committed {
            readings: self.want.readings.min(self.reserved.readings),
            events: self.want.events.min(self.reserved.events),
        }
    }
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

    /// Hands the forwarder the held batches and the bound the reservation now covers. Called with the
    /// lock held, so batches go out in commit order whichever thread sends them.
    fn release(&self, due: &mut Due) {
        let bound = due.durable();
        if bound.readings >= due.want.readings {
            for b in due.batches.drain(..) {
                let _ = self.batches.send(b);
            }
        }
        self.durable.send_if_modified(|d| {
            let new = d.max(bound);
            let changed = new != *d;
            *d = new;
            changed
        });
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
        let now = Instant::now();
        let shared = Arc::new(Shared {
            due: Mutex::new(Due {
                want: Committed::default(),
                batches: Vec::new(),
                attempted: Committed::default(),
                reserved: Committed::default(),
                urgent: false,
                last_write: now,
                extended: (now, Committed::default()),
                stop: false,
            }),
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

    /// What the forwarder may publish (committed and inside the reservation on disk).
    pub fn watch_durable(&self) -> watch::Receiver<Committed> {
        self.shared.durable.subscribe()
    }

    /// Committed batches once the reservation covers them, in commit order (the forwarder's fast path).
    pub fn batches(&self) -> broadcast::Sender<Arc<CommittedBatch>> {
        self.shared.batches.clone()
    }

    /// Records newly committed seqs (and the batch that committed them, for the fast path). Inside the
    /// reservation they go to the forwarder at once; otherwise once the thread has extended it.
    pub fn update(&mut self, committed: Committed, batch: Option<Arc<CommittedBatch>>) {
        let wake = {
            let mut due = self.shared.lock();
            if due.want == Committed::default() && due.reserved == Committed::default() {
                // The first seqs (the database's at start): the rate of the first step counts from
                // here, not from 0.
                due.extended = (Instant::now(), committed);
            }
            due.want = due.want.max(committed);
            if let Some(b) = batch {
                if due.batches.len() >= MAX_HELD_BATCHES {
                    due.batches.clear();
                }
                due.batches.push(b);
            }
            self.shared.release(&mut due);
            due.write_due()
        };
        if wake {
            if self.thread.is_some() {
                self.shared.work.notify_one();
            } else {
                write_due(&self.shared, &self.target, &mut self.inline_failing);
            }
        }
    }

    /// Writes the committed marks (at least `committed`) before returning (a write was at least tried):
    /// at start, so the file names this database's epoch; before a checkpoint moves WAL pages into the
    /// database file, so a WAL lost afterwards shows as a database behind its marks; at a flush.
    pub fn ensure_durable(&mut self, committed: Committed) {
        self.shared.lock().urgent = true;
        self.update(committed, None);
        if self.thread.is_none() {
            return;
        }
        self.shared.work.notify_one();
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut due = self.shared.lock();
        while !due.attempted.covers(committed) {
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

    /// Writes the committed marks with the reservation taken back down to them (a clean stop: the next
    /// start continues without a gap) and stops the thread.
    pub fn finish(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        match self.thread.take() {
            Some(t) => {
                if t.join().is_err() {
                    tracing::error!("the high-water thread panicked");
                }
            }
            None => write_final(&self.shared, &self.target),
        }
    }
}

impl Drop for HighWater {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The thread: wait for a write to be due (an extension, an urgent write, a refresh or a retry), do it.
fn run(shared: &Shared, target: &Target) {
    let mut failing = false;
    loop {
        {
            let mut due = shared.lock();
            loop {
                if due.stop {
                    drop(due);
                    write_final(shared, target);
                    return;
                }
                if due.write_due() && !failing {
                    break;
                }
                // A refresh of changed committed marks is due a second after the last write; a failed
                // write is retried after `RETRY_AFTER`.
                let wait = if failing {
                    RETRY_AFTER
                } else if due.want != due.attempted {
                    REFRESH.saturating_sub(due.last_write.elapsed())
                } else {
                    Duration::from_secs(3600)
                };
                let (d, timeout) = shared
                    .work
                    .wait_timeout(due, wait)
                    .unwrap_or_else(PoisonError::into_inner);
                due = d;
                if failing && timeout.timed_out() {
                    failing = false; // try again
                }
                if due.urgent {
                    failing = false;
                }
            }
        }
        write_due(shared, target, &mut failing);
    }
}

/// One write of the latest committed marks, extending the reservation when it runs short; on success
/// the held batches the reservation covers and the new bound go to the forwarder.
fn write_due(shared: &Shared, target: &Target, failing: &mut bool) {
    let (want, reserve) = {
        let mut due = shared.lock();
        due.urgent = false;
        let reserve = if due.needs_extension() {
            let step = due.step();
            Committed {
                readings: due.want.readings + step.readings,
                events: due.want.events + step.events,
            }
            .max(due.reserved)
        } else {
            due.reserved
        };
        (due.want, reserve)
    };
    let ok = write_logged(
        target,
        Marks {
            committed: want,
            reserved: reserve,
        },
        failing,
    );
    let mut due = shared.lock();
    due.attempted = due.attempted.max(want);
    due.last_write = Instant::now();
    if ok {
        if reserve != due.reserved {
            due.extended = (Instant::now(), want);
        }
        due.reserved = due.reserved.max(reserve);
        shared.release(&mut due);
    } else if due.batches.len() > MAX_HELD_BATCHES {
        due.batches.clear();
    }
    drop(due);
    // After the bound is published: `ensure_durable` returns with the marks on disk and announced.
    shared.done.notify_all();
}

/// The clean stop's write: committed marks, and the reservation down to them.
fn write_final(shared: &Shared, target: &Target) {
    let want = shared.lock().want;
    let mut failing = false;
    let marks = Marks {
        committed: want,
        reserved: want,
    };
    if write_logged(target, marks, &mut failing) {
        let mut due = shared.lock();
        due.attempted = due.attempted.max(want);
    }
    shared.done.notify_all();
}

fn write_logged(target: &Target, marks: Marks, failing: &mut bool) -> bool {
    match write_marks(&target.path, target.epoch, marks) {
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
                tracing::error!(path = %target.path.display(), error = %e, "cannot write the store's high-water marks: nothing beyond the reservation is forwarded until they are written (retried every second)");
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

    fn batch(first_seq: u64) -> Arc<CommittedBatch> {
        Arc::new(CommittedBatch {
            first_seq,
            readings: Vec::new(),
        })
    }

    #[test]
    fn the_reservation_leads_and_commits_inside_it_go_out_at_once() {
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
        let (epoch, marks) = read_marks(&p).unwrap();
        assert_eq!((epoch, marks.committed), (42, c(10, 3)));
        assert!(
            marks.reserved.readings >= 10 + MIN_STEP.readings
                && marks.reserved.events >= 3 + MIN_STEP.events,
            "{marks:?}"
        );
        assert_eq!(*durable.borrow(), c(10, 3));
        // Inside the reservation: published on the caller's thread, before `update` returns.
        hw.update(c(11, 3), Some(batch(11)));
        assert_eq!(batches.try_recv().unwrap().first_seq, 11);
        assert_eq!(*durable.borrow(), c(11, 3));
        hw.update(c(12, 4), None);
        assert_eq!(*durable.borrow(), c(12, 4));
        hw.finish();
        assert_eq!(
            read_marks(&p).map(|(e, m)| (e, m.committed, m.reserved)),
            Some((42, c(12, 4), c(12, 4))),
            "a clean stop writes the committed marks and takes the reservation back down to them"
        );
    }

    #[test]
    fn the_first_step_after_a_start_high_in_the_seqs_is_the_smallest() {
        let dir = tempfile::tempdir().unwrap();
        let p = marks_path(&dir.path().join("x.db"));
        let mut hw = HighWater::new(p.clone(), 9);
        // A database already at 50 million: the step is sized by the rate since the start, not by the
        // seqs themselves (a kill -9 then skips one small step, not millions).
        hw.ensure_durable(c(50_000_000, 10));
        let until = Instant::now() + Duration::from_secs(10);
        while read_marks(&p).is_none_or(|(_, m)| m.reserved.readings <= 50_000_000)
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let reserved = read_marks(&p).unwrap().1.reserved;
        assert_eq!(
            reserved,
            c(50_000_000 + MIN_STEP.readings, 10 + MIN_STEP.events)
        );
        hw.finish();
    }

    #[test]
    fn a_commit_beyond_the_reservation_is_held_until_an_extension_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = marks_path(&dir.path().join("x.db"));
        let mut hw = HighWater::new(p.clone(), 7);
        let durable = hw.watch_durable();
        let mut batches = hw.batches().subscribe();
        hw.ensure_durable(c(0, 0));
        let until = Instant::now() + Duration::from_secs(10);
        while read_marks(&p).is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let reserved = read_marks(&p).unwrap().1.reserved.readings;
        // A burst far past the reservation: the forwarder gets nothing above what is reserved on disk
        // until the thread has written a larger reservation.
        let far = reserved + 5 * MAX_STEP.readings;
        hw.update(c(far, 0), Some(batch(1)));
        while durable.borrow().readings < far && Instant::now() < until {
            assert!(durable.borrow().readings <= read_marks(&p).unwrap().1.reserved.readings);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(durable.borrow().readings, far);
        assert!(read_marks(&p).unwrap().1.reserved.readings >= far);
        assert_eq!(batches.try_recv().unwrap().first_seq, 1);
        hw.finish();
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
        hw.update(c(5, 0), Some(batch(1)));
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
