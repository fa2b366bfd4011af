//! Gates: whether a settled file may be sent yet. Two workflows need them:
//!
//! - `min_age`: send only files unchanged for at least this long (a recorder that pauses
//!   between writes, a camera that rewrites a file's header at the end).
//! - dated names: send only files or folders whose name carries a date (a pattern such as
//!   `%Y%m%d`), once that day has ended plus a grace period: upload yesterday's folder after
//!   midnight. The outermost dated part of a path decides, so a whole dated folder opens at
//!   one moment and goes as a unit; files with no date in their path are not sent at all.
//!
//! A gate never loses work: a held send stays queued (state `held`, its reason shown in
//! `status`) and is claimed again when its time comes. The handler asks the gate right before
//! sending, so every send is gated whoever queued it; the catch-up scan asks too, so files a
//! gate never lets through are not queued at all.

use std::time::{Duration, SystemTime};

use chrono::format::{Item, StrftimeItems};
use chrono::{Local, NaiveDate, TimeZone};

use crate::clock::mtime_ns;
use crate::relpath::RelPath;

/// A dated-name pattern that cannot serve.
#[derive(Debug, thiserror::Error)]
#[error("dated pattern {pattern:?}: {why}")]
pub struct GateError {
    pattern: String,
    why: String,
}

/// What a gate says about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Send it now.
    Go,
    /// Never send it (no date in its name); why, for logs.
    Skip(String),
    /// Not before `until` (ms since the epoch); `reason` is shown in `status`.
    Hold { until: u64, reason: String },
}

/// Names carrying a date: the pattern and the grace period after the day ends.
#[derive(Debug, Clone)]
pub struct DatedNames {
    pattern: String,
    grace: Duration,
}

impl DatedNames {
    /// `pattern` is a strftime date pattern (`%Y%m%d`, `%Y-%m-%d`, `%d.%m.%Y`…) that must
    /// name a year, a month and a day.
    pub fn new(pattern: &str, grace: Duration) -> Result<DatedNames, GateError> {
        let bad = |why: &str| GateError {
            pattern: pattern.to_string(),
            why: why.to_string(),
        };
        if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
            return Err(bad("not a valid strftime pattern"));
        }
        // Round trip a date whose fields are all distinct: the pattern must name each.
        let sample = NaiveDate::from_ymd_opt(2031, 12, 25).ok_or_else(|| bad("internal"))?;
        let mut text = String::new();
        use std::fmt::Write;
        write!(text, "{}", sample.format(pattern)).map_err(|_| bad("cannot format a date"))?;
        match NaiveDate::parse_from_str(&text, pattern) {
            Ok(d) if d == sample => Ok(DatedNames {
                pattern: pattern.to_string(),
                grace,
            }),
            _ => Err(bad("must name a year, a month and a day (e.g. %Y%m%d)")),
        }
    }

    /// The first date found in `name`, anywhere in it (`IMG_20261123_0915.jpg`).
    pub fn date_in(&self, name: &str) -> Option<NaiveDate> {
        name.char_indices()
            .filter(|(_, c)| c.is_ascii_digit() || c.is_alphabetic())
            .find_map(|(i, _)| {
                NaiveDate::parse_and_remainder(&name[i..], &self.pattern)
                    .ok()
                    .map(|(d, _)| d)
            })
    }

    /// The pattern, as given (`%Y%m%d`).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The date of the outermost part of `rel` that carries one.
    pub fn date_of(&self, rel: &RelPath) -> Option<NaiveDate> {
        String::from_utf8_lossy(rel.as_bytes())
            .split('/')
            .find_map(|part| self.date_in(part))
    }

    /// When things dated `date` may go: the local midnight that ends the day, plus grace.
    pub fn opens_at(&self, date: NaiveDate) -> u64 {
        let end = date
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|t| Local.from_local_datetime(&t).earliest());
        match end {
            Some(t) => {
                (t.timestamp_millis().max(0) as u64).saturating_add(self.grace.as_millis() as u64)
            }
            // Past the end of the calendar: never.
            None => u64::MAX,
        }
    }
}

/// The gates of one mapping; the default lets everything through.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub min_age: Duration,
    pub dated: Option<DatedNames>,
    /// A file modified less than this long ago is still being written: held, not sent
    /// (`sync`, whose scan sees no later events; a live watcher settles files itself). A
    /// modification time in the future (a wrong clock) does not count as changing, so such
    /// a file is not held for months.
    pub still_changing: Duration,
}

impl Gate {
    /// Whether the file at `rel`, last modified at `mtime`, may be sent at `now` (ms).
    pub fn check(&self, rel: &RelPath, mtime: SystemTime, now: u64) -> Admission {
        let mut until = 0u64;
        let mut reason = String::new();
        if let Some(dated) = &self.dated {
            let Some(date) = dated.date_of(rel) else {
                return Admission::Skip(format!("{rel}: no {} date in its name", dated.pattern));
            };
            let opens = dated.opens_at(date);
            if opens > now {
                until = opens;
                reason = format!("dated {date}, grace {}", human(dated.grace));
            }
        }
        if !self.still_changing.is_zero() {
            let modified = (mtime_ns(mtime).max(0) / 1_000_000) as u64;
            let settled = modified.saturating_add(self.still_changing.as_millis() as u64);
            if modified <= now && settled > now && settled > until {
                until = settled;
                reason = format!(
                    "still changing: modified within {}",
                    human(self.still_changing)
                );
            }
        }
        if !self.min_age.is_zero() {
            let modified = (mtime_ns(mtime).max(0) / 1_000_000) as u64;
            let old_enough = modified.saturating_add(self.min_age.as_millis() as u64);
            if old_enough > now && old_enough > until {
                until = old_enough;
                reason = format!("min_age {}", human(self.min_age));
            }
        }
        if until > now {
            Admission::Hold {
                reason: format!("held until {} ({reason})", local_time(until)),
                until,
            }
        } else {
            Admission::Go
        }
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `ms` since the epoch as local time, for people.
fn local_time(ms: u64) -> String {
    match Local.timestamp_millis_opt(ms.min(i64::MAX as u64) as i64) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        }
        chrono::LocalResult::None => "never".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel as p;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn patterns_must_name_a_whole_date() {
        assert!(DatedNames::new("%Y%m%d", Duration::ZERO).is_ok());
        assert!(DatedNames::new("%Y-%m-%d", Duration::ZERO).is_ok());
        assert!(DatedNames::new("%d.%m.%Y", Duration::ZERO).is_ok());
        assert!(DatedNames::new("%Y%m", Duration::ZERO).is_err());
        assert!(DatedNames::new("%Q", Duration::ZERO).is_err());
        assert!(DatedNames::new("plain", Duration::ZERO).is_err());
    }

    #[test]
    fn finds_dates_anywhere_in_a_name_and_the_outermost_wins() {
        let d = DatedNames::new("%Y%m%d", Duration::ZERO).unwrap();
        assert_eq!(d.date_in("20261123"), Some(ymd(2026, 11, 23)));
        assert_eq!(d.date_in("IMG_20261123_0915.jpg"), Some(ymd(2026, 11, 23)));
        assert_eq!(d.date_in("notes.txt"), None);
        assert_eq!(d.date_in("20261340"), None);
        assert_eq!(
            d.date_of(&p("cam/20240101/IMG_20240102.jpg")),
            Some(ymd(2024, 1, 1))
        );
        let dashed = DatedNames::new("%Y-%m-%d", Duration::ZERO).unwrap();
        assert_eq!(dashed.date_in("log 2025-02-28.txt"), Some(ymd(2025, 2, 28)));
    }

    #[test]
    fn a_day_opens_at_its_end_plus_grace() {
        let grace = Duration::from_secs(3600);
        let d = DatedNames::new("%Y%m%d", grace).unwrap();
        let day = ymd(2026, 11, 23);
        let midnight = Local
            .from_local_datetime(&ymd(2026, 11, 24).and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .timestamp_millis() as u64;
        assert_eq!(d.opens_at(day), midnight + 3_600_000);
        let gate = Gate {
            min_age: Duration::ZERO,
            dated: Some(d),
            ..Gate::default()
        };
        let f = p("20261123/a.jpg");
        let now = SystemTime::now();
        assert!(matches!(
            gate.check(&f, now, midnight + 3_599_999),
            Admission::Hold { until, .. } if until == midnight + 3_600_000
        ));
        assert_eq!(gate.check(&f, now, midnight + 3_600_000), Admission::Go);
        assert!(matches!(
            gate.check(&p("misc/a.jpg"), now, midnight),
            Admission::Skip(_)
        ));
    }

    #[test]
    fn a_file_modified_within_the_settle_time_is_still_changing() {
        let gate = Gate {
            still_changing: Duration::from_secs(3),
            ..Gate::default()
        };
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        match gate.check(&p("a"), mtime, 1_001_000) {
            Admission::Hold { until, reason } => {
                assert_eq!(until, 1_003_000);
                assert!(reason.contains("still changing"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(gate.check(&p("a"), mtime, 1_003_000), Admission::Go);
        // A modification time ahead of the clock is no sign of a write in progress.
        assert_eq!(gate.check(&p("a"), mtime, 999_000), Admission::Go);
    }

    #[test]
    fn min_age_counts_from_the_last_change() {
        let gate = Gate {
            min_age: Duration::from_secs(60),
            ..Gate::default()
        };
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let now = 1_000_000 + 30_000;
        match gate.check(&p("a"), mtime, now) {
            Admission::Hold { until, reason } => {
                assert_eq!(until, 1_060_000);
                assert!(reason.contains("min_age 1m"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(gate.check(&p("a"), mtime, 1_060_000), Admission::Go);
    }
}
