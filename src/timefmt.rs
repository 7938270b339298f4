//! How timestamps are written in everything the agent publishes and stores as text.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-22T10:03:12.123456Z`.
pub fn rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// [`rfc3339`] appended to `out` without allocating: the payload encoder writes one per reading.
/// Years outside 0..=9999 and leap seconds take chrono's formatter (the same text, the slow way).
pub fn write_rfc3339(ts: DateTime<Utc>, out: &mut Vec<u8>) {
    let (year, nanos) = (ts.year(), ts.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        out.extend_from_slice(rfc3339(ts).as_bytes());
        return;
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, ts.month());
    put(8, 2, ts.day());
    put(11, 2, ts.hour());
    put(14, 2, ts.minute());
    put(17, 2, ts.second());
    put(20, 6, nanos / 1000);
    out.extend_from_slice(&b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_fast_writer_writes_what_chrono_writes() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut cases: Vec<DateTime<Utc>> = (0..20_000)
            .map(|_| {
                let secs = rng.i64(-62_167_219_200..253_402_300_800); // years 0..=9999
                Utc.timestamp_opt(secs, rng.u32(0..1_000_000_000)).unwrap()
            })
            .collect();
        cases.push(Utc.timestamp_opt(0, 0).unwrap());
        cases.push(Utc.timestamp_opt(253_402_300_799, 999_999_999).unwrap());
        cases.push(Utc.timestamp_opt(-62_167_219_200, 0).unwrap());
        // Outside the fast range: years beyond 9999 and before 0, and a leap second.
        cases.push(Utc.timestamp_opt(253_402_300_800, 5_000).unwrap());
        cases.push(Utc.timestamp_opt(-62_167_219_201, 0).unwrap());
        cases.push(Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap());
        for ts in cases {
            let mut out = Vec::new();
            write_rfc3339(ts, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339(ts), "{ts:?}");
        }
    }
}
