//! When readings arrived, for `max_age`: a sparse mark per commit (`arrivals` table), on a clock that
//! follows the wall clock but is corrected for steps. A step of the wall clock (NTP setting a clock that
//! was wrong at boot) is noticed by comparing it with the monotonic clock, and the stored marks are shifted
//! by the step, so a reading's age is the time it has really spent in the store.

use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

/// A difference between wall-clock and monotonic time larger than this is a step, not drift.
const STEP_TOLERANCE: Duration = Duration::from_secs(5);

/// Time source, replaceable in tests.
pub trait Clock: Send {
    fn wall_us(&self) -> i64;
    fn mono(&self) -> Duration;
}

pub struct SystemClock(Instant);

impl SystemClock {
    pub fn new() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn wall_us(&self) -> i64 {
        chrono::Utc::now().timestamp_micros()
    }
    fn mono(&self) -> Duration {
        self.0.elapsed()
    }
}

pub struct Arrivals {
    clock: Box<dyn Clock>,
    /// Wall and monotonic time at the last look.
    last: (i64, Duration),
    /// Monotonic time of the last mark written by this process.
    last_mark_at: Option<Duration>,
    /// Seq of the newest mark: no mark is needed until readings above it are committed.
    last_mark_seq: u64,
    /// A mark at most this often.
    every: Duration,
}

impl Arrivals {
    pub fn new(
        conn: &Connection,
        clock: Box<dyn Clock>,
        max_age: Option<Duration>,
    ) -> rusqlite::Result<Self> {
        let last_mark_seq: i64 =
            conn.query_row("SELECT ifnull(max(seq), 0) FROM arrivals", [], |r| r.get(0))?;
        let last = (clock.wall_us(), clock.mono());
        // ~1000 marks over max_age: enough precision, a negligible table.
        let every = max_age
            .map(|a| (a / 1000).clamp(Duration::from_secs(1), Duration::from_secs(60)))
            .unwrap_or(Duration::from_secs(60));
        Ok(Arrivals {
            clock,
            last,
            last_mark_at: None,
            last_mark_seq: last_mark_seq.max(0) as u64,
            every,
        })
    }

    /// Now on the arrival clock (µs); shifts the stored marks when the wall clock stepped.
    pub fn now(&mut self, conn: &Connection) -> rusqlite::Result<i64> {
        let wall = self.clock.wall_us();
        let mono = self.clock.mono();
        let elapsed = i64::try_from((mono - self.last.1).as_micros()).unwrap_or(i64::MAX);
        let expected = self.last.0.saturating_add(elapsed);
        let step = wall.saturating_sub(expected);
        if step.unsigned_abs() > STEP_TOLERANCE.as_micros() as u64 {
            let n = conn.execute("UPDATE arrivals SET received = received + ?1", [step])?;
            tracing::warn!(
                step_s = step as f64 / 1e6,
                marks = n,
                "the wall clock stepped; arrival times of stored readings were shifted with it, so max_age still counts the time they spent in the store"
            );
        }
        self.last = (wall, mono);
        Ok(wall)
    }

    /// Records that every reading below `next_seq` arrived by now, if the last mark is old enough: inside
    /// each commit's transaction, and at maintenance so the last readings before a pause are covered.
    pub fn mark(&mut self, tx: &Connection, next_seq: u64) -> rusqlite::Result<()> {
        let mono = self.clock.mono();
        if next_seq <= self.last_mark_seq
            || self.last_mark_at.is_some_and(|m| mono - m < self.every)
        {
            return Ok(());
        }
        let now = self.now(tx)?;
        tx.prepare_cached("INSERT OR REPLACE INTO arrivals (seq, received) VALUES (?1, ?2)")?
            .execute(params![next_seq as i64, now])?;
        self.last_mark_at = Some(mono);
        self.last_mark_seq = next_seq;
        Ok(())
    }

    /// Forgets the last mark (its transaction was rolled back).
    pub fn forget_mark(&mut self, conn: &Connection) {
        self.last_mark_at = None;
        self.last_mark_seq = conn
            .query_row("SELECT ifnull(max(seq), 0) FROM arrivals", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0)
            .max(0) as u64;
    }
}
