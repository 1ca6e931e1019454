//! Cron schedules: a task of a template created at each tick of a cron expression in a
//! timezone. The expression is parsed by `croner` (5 fields, or 6 with a leading seconds
//! field; DST gaps and overlaps as the Open Cron Pattern Specification and Vixie cron have
//! them), the timezone is an IANA name (`chrono-tz`). Which ticks fire is decided here
//! ([`Schedule::due`]); that each fires once however many processes run is the database's
//! (`store::schedules`, docs/flow-control.md).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// What to do with the ticks that passed while no process was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Fire none of them (the next tick fires as usual).
    #[default]
    Skip,
    /// Fire one task for all of them (the latest missed tick).
    FireOnce,
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::FireOnce => "fire_once",
        }
    }
}

impl FromStr for Missed {
    type Err = Error;
    fn from_str(s: &str) -> Result<Missed> {
        match s {
            "skip" => Ok(Missed::Skip),
            "fire_once" => Ok(Missed::FireOnce),
            other => Err(Error::InvalidInput(format!(
                "missed must be \"skip\" or \"fire_once\", got {other:?}"
            ))),
        }
    }
}

fn utc() -> String {
    "UTC".to_owned()
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A schedule as written: in a template (which names the task), or in the configuration and
/// at runtime (with `namespace`, `task` and `version`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDoc {
    pub name: String,
    pub cron: String,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default = "empty_object")]
    pub context: Value,
    #[serde(default)]
    pub missed: Missed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A checked schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron: Cron,
    pub expression: String,
    pub timezone: Tz,
    pub context: Value,
    pub missed: Missed,
    pub namespace: String,
    pub task: String,
    pub version: String,
}

impl PartialEq for Schedule {
    fn eq(&self, o: &Schedule) -> bool {
        (
            &self.name,
            &self.expression,
            self.timezone,
            &self.context,
            self.missed,
        ) == (&o.name, &o.expression, o.timezone, &o.context, o.missed)
            && (&self.namespace, &self.task, &self.version) == (&o.namespace, &o.task, &o.version)
    }
}

/// Parse a cron expression: 5 fields, or 6 with a leading seconds field.
pub fn parse_cron(expression: &str) -> std::result::Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "cron {expression:?} has {fields} fields: write 5 (minute hour day month weekday) \
             or 6 (a leading seconds field)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| format!("cron {expression:?} is invalid: {e}"))
}

/// An IANA timezone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> std::result::Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!(
            "timezone {name:?} is unknown: use an IANA name such as \"Europe/Berlin\" or \"UTC\""
        )
    })
}

/// A schedule's name: 1-128 letters, digits, '_', '-' or '.'.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schedule name {name:?} is invalid: use 1-128 letters, digits, '_', '-' or '.'"
        ))
    }
}

impl ScheduleDoc {
    /// Check a schedule; `target` is the template that declares it (None: the document names
    /// its task itself). Errors are the message alone, for the caller to place.
    pub fn compile(
        &self,
        target: Option<(&str, &str, &str)>,
    ) -> std::result::Result<Schedule, String> {
        check_name(&self.name)?;
        self.compile_named(target)
            .map_err(|m| format!("schedule {:?}: {m}", self.name))
    }

    fn compile_named(
        &self,
        target: Option<(&str, &str, &str)>,
    ) -> std::result::Result<Schedule, String> {
        let cron = parse_cron(&self.cron)?;
        let timezone = parse_timezone(&self.timezone)?;
        if !self.context.is_object() {
            return Err("context must be a mapping".to_owned());
        }
        let (namespace, task, version) = match (target, &self.namespace, &self.task, &self.version) {
            (Some(_), Some(_), _, _) | (Some(_), _, Some(_), _) | (Some(_), _, _, Some(_)) => {
                return Err(
                    "a template's schedule creates tasks of that template: omit namespace, task and version"
                        .to_owned(),
                )
            }
            (Some((n, t, v)), None, None, None) => (n.to_owned(), t.to_owned(), v.to_owned()),
            (None, Some(n), Some(t), Some(v)) => (n.clone(), t.clone(), v.clone()),
            (None, ..) => {
                return Err("it must name its task: namespace, task and version".to_owned())
            }
        };
        Ok(Schedule {
            name: self.name.clone(),
            cron,
            expression: self.cron.trim().to_owned(),
            timezone,
            context: self.context.clone(),
            missed: self.missed,
            namespace,
            task,
            version,
        })
    }
}

/// Which ticks a schedule fires now, and how far it has handled them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Ticks to create a task for, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Whether the last of `fire` is the tick due now (the others are missed ones).
    pub on_time: bool,
    /// The newest tick at or before now: the schedule's new `last_tick`.
    pub through: DateTime<Utc>,
    /// How many ticks were missed (passed while nothing ran) and not fired.
    pub skipped: usize,
}

/// How many missed ticks are counted for the log line (beyond that: "at least").
const COUNT_MISSED_UP_TO: usize = 1000;

impl Schedule {
    /// The first tick after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.trunc_subsecs(0);
        let local = t.with_timezone(&self.timezone);
        // Within a repeated hour (a DST fall-back) a search from `t` cannot tell which pass it
        // is in; croner's iterator yields both passes when it starts before them.
        let ambiguous = matches!(
            self.timezone.from_local_datetime(&local.naive_local()),
            LocalResult::Ambiguous(..)
        );
        let start = if ambiguous {
            local - chrono::Duration::seconds(3601)
        } else {
            local
        };
        self.cron
            .iter_after(start)
            .map(|d| d.with_timezone(&Utc))
            .find(|d| *d > t)
    }

    /// The newest tick at or before `t`.
    fn at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.trunc_subsecs(0);
        let mut tick = self
            .cron
            .find_previous_occurrence(&t.with_timezone(&self.timezone), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))?;
        // A backward search may land on the first pass of a repeated hour: walk forward.
        for _ in 0..3600 {
            match self.next_after(tick) {
                Some(n) if n <= t && n > tick => tick = n,
                _ => break,
            }
        }
        Some(tick)
    }

    /// The ticks after `last` (the newest tick handled) and at or before `now`. The newest
    /// fires when it is at most `on_time` old; every other one passed while no process
    /// handled it — a missed tick: none fires under [`Missed::Skip`], the newest of them under
    /// [`Missed::FireOnce`]. None when no tick is due.
    pub fn due(&self, last: DateTime<Utc>, now: DateTime<Utc>, on_time: Duration) -> Option<Due> {
        let first = self.next_after(last)?;
        if first > now {
            return None;
        }
        let newest = self
            .at_or_before(now)
            .filter(|t| *t >= first)
            .unwrap_or(first);
        let window = chrono::Duration::from_std(on_time).unwrap_or(chrono::Duration::MAX);
        let newest_on_time = now - newest <= window;
        // The missed ticks: every one from `first` before `newest`, and `newest` when late.
        let latest_missed = if newest_on_time {
            self.at_or_before(newest - chrono::Duration::seconds(1))
                .filter(|t| *t >= first && *t > last)
        } else {
            Some(newest)
        };
        let mut skipped = 0;
        if let Some(latest) = latest_missed {
            let mut t = first;
            while t <= latest && skipped < COUNT_MISSED_UP_TO {
                skipped += 1;
                match self.next_after(t) {
                    Some(n) if n > t => t = n,
                    _ => break,
                }
            }
        }
        let mut fire = Vec::new();
        if let (Missed::FireOnce, Some(latest)) = (self.missed, latest_missed) {
            fire.push(latest);
            skipped = skipped.saturating_sub(1);
        }
        if newest_on_time {
            fire.push(newest);
        }
        Some(Due {
            fire,
            on_time: newest_on_time,
            through: newest,
            skipped,
        })
    }

    /// The idempotency key of the task a tick creates.
    pub fn tick_key(&self, tick: DateTime<Utc>) -> String {
        format!(
            "schedule:{}:{}",
            self.name,
            tick.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }
}

/// A schedule compiled for an error naming it.
pub(crate) fn compile_in_template(
    doc: &ScheduleDoc,
    target: (&str, &str, &str),
) -> Result<Schedule> {
    doc.compile(Some(target))
        .map_err(|m| Error::template(None, None, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, tz: &str, missed: Missed) -> Schedule {
        ScheduleDoc {
            name: "s".into(),
            cron: cron.into(),
            timezone: tz.into(),
            context: empty_object(),
            missed,
            namespace: Some("n".into()),
            task: Some("t".into()),
            version: Some("1.0.0".into()),
        }
        .compile(None)
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields_and_nothing_else() {
        assert!(parse_cron("*/5 * * * *").is_ok());
        assert!(parse_cron("*/2 * * * * *").is_ok());
        for bad in ["* * * *", "0 0 0 * * * 2030", "61 * * * *", "nonsense", ""] {
            assert!(parse_cron(bad).is_err(), "{bad:?}");
        }
        assert!(parse_timezone("Europe/Berlin").is_ok());
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn six_fields_lead_with_seconds() {
        let s = schedule("*/20 * * * * *", "UTC", Missed::Skip);
        assert_eq!(
            s.next_after(utc("2026-12-01T10:00:05Z")),
            Some(utc("2026-12-01T10:00:20Z"))
        );
    }

    #[test]
    fn the_tick_due_now_fires_and_missed_ones_follow_the_policy() {
        let on_time = Duration::from_secs(2);
        let skip = schedule("* * * * * *", "UTC", Missed::Skip);
        // One tick since the last: it fires.
        let d = skip
            .due(
                utc("2026-12-01T10:00:00Z"),
                utc("2026-12-01T10:00:01.3Z"),
                on_time,
            )
            .unwrap();
        assert_eq!(d.fire, vec![utc("2026-12-01T10:00:01Z")]);
        assert_eq!((d.through, d.skipped), (utc("2026-12-01T10:00:01Z"), 0));
        // Nothing since the last.
        assert_eq!(
            skip.due(
                utc("2026-12-01T10:00:01Z"),
                utc("2026-12-01T10:00:01.9Z"),
                on_time
            ),
            None
        );
        // Down for 5 s: only the current tick fires; 4 are skipped.
        let d = skip
            .due(
                utc("2026-12-01T10:00:00Z"),
                utc("2026-12-01T10:00:05.2Z"),
                on_time,
            )
            .unwrap();
        assert_eq!(
            (d.fire.clone(), d.skipped),
            (vec![utc("2026-12-01T10:00:05Z")], 4)
        );
        let once = schedule("* * * * * *", "UTC", Missed::FireOnce);
        let d = once
            .due(
                utc("2026-12-01T10:00:00Z"),
                utc("2026-12-01T10:00:05.2Z"),
                on_time,
            )
            .unwrap();
        assert_eq!(
            d.fire,
            vec![utc("2026-12-01T10:00:04Z"), utc("2026-12-01T10:00:05Z")]
        );
        assert_eq!(d.skipped, 3);
        // Back between ticks of a daily schedule: the missed one is late, not on time.
        let daily = schedule("0 3 * * *", "UTC", Missed::FireOnce);
        let d = daily
            .due(
                utc("2026-11-28T03:00:00Z"),
                utc("2026-12-01T09:00:00Z"),
                on_time,
            )
            .unwrap();
        assert_eq!((d.fire, d.skipped), (vec![utc("2026-12-01T03:00:00Z")], 2));
        let daily = schedule("0 3 * * *", "UTC", Missed::Skip);
        let d = daily
            .due(
                utc("2026-11-28T03:00:00Z"),
                utc("2026-12-01T09:00:00Z"),
                on_time,
            )
            .unwrap();
        assert_eq!(
            (d.fire.len(), d.skipped, d.through),
            (0, 3, utc("2026-12-01T03:00:00Z"))
        );
    }

    #[test]
    fn timezones_and_daylight_saving_changes() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        let s = schedule("0 9 * * *", "Europe/Berlin", Missed::Skip);
        assert_eq!(
            s.next_after(utc("2026-12-01T00:00:00Z")),
            Some(utc("2026-12-01T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-07-01T00:00:00Z")),
            Some(utc("2026-07-01T07:00:00Z"))
        );
        // Spring forward (2026-03-29, 02:00 → 03:00 in Berlin): a fixed 02:30 job runs once,
        // right after the gap, and not twice.
        let s = schedule("30 2 * * *", "Europe/Berlin", Missed::Skip);
        let t = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            t.with_timezone(&berlin).date_naive().to_string(),
            "2026-03-29"
        );
        assert_eq!(t, utc("2026-03-29T01:00:00Z"));
        assert_eq!(s.next_after(t), Some(utc("2026-03-30T00:30:00Z")));
        // Fall back (2026-10-25, 03:00 → 02:00): a fixed 02:30 job runs once...
        let t = s.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(t, utc("2026-10-25T00:30:00Z"));
        assert_eq!(s.next_after(t), Some(utc("2026-10-26T01:30:00Z")));
        // ...and an interval job runs in both passes of the repeated hour.
        let s = schedule("30 * * * *", "Europe/Berlin", Missed::Skip);
        let start = berlin
            .with_ymd_and_hms(2026, 10, 25, 1, 45, 0)
            .unwrap()
            .with_timezone(&Utc);
        let mut ticks = vec![];
        let mut t = start;
        for _ in 0..3 {
            t = s.next_after(t).unwrap();
            ticks.push(t);
        }
        assert_eq!(
            ticks,
            vec![
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-25T01:30:00Z"),
                utc("2026-10-25T02:30:00Z")
            ]
        );
    }

    #[test]
    fn template_schedules_name_no_task_and_config_ones_must() {
        let mut doc = ScheduleDoc {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            timezone: "UTC".into(),
            context: empty_object(),
            missed: Missed::Skip,
            namespace: None,
            task: None,
            version: None,
        };
        assert!(doc.compile(Some(("n", "t", "1.0.0"))).is_ok());
        assert!(doc
            .compile(None)
            .unwrap_err()
            .contains("must name its task"));
        doc.namespace = Some("n".into());
        assert!(doc
            .compile(Some(("n", "t", "1.0.0")))
            .unwrap_err()
            .starts_with("schedule \"nightly\": a template's"));
        doc.name = "bad name".into();
        assert!(doc.compile(None).unwrap_err().contains("schedule name"));
    }
}
