//! The rules' settings: which rules run, their thresholds and the allowed reveal hours, parsed
//! once from the configuration with the setting named in every error.

use crate::core::alerting::AlertKind;
use crate::core::audit::Severity;
use crate::core::error::{Error, Result};
use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};

/// A rule that can be switched off, with the severity of what it raises.
#[derive(Debug, Clone, Copy)]
pub struct RuleInfo {
    /// The alert kind it raises (also its name in `SMTP_VAULT_RULES_OFF`).
    pub kind: AlertKind,
    /// Severity of its alerts.
    pub severity: Severity,
}

/// The rules evaluated here; see docs/monitoring.md for what each means and what to do.
pub const RULES: &[RuleInfo] = &[
    RuleInfo { kind: AlertKind::RevealBurst, severity: Severity::Critical },
    RuleInfo { kind: AlertKind::RevealOutsideHours, severity: Severity::Warning },
    RuleInfo { kind: AlertKind::FailedLogins, severity: Severity::Warning },
    RuleInfo { kind: AlertKind::FailedReauths, severity: Severity::Warning },
    RuleInfo { kind: AlertKind::LoginNewIp, severity: Severity::Warning },
    RuleInfo { kind: AlertKind::LoginNewPasskey, severity: Severity::Warning },
    RuleInfo { kind: AlertKind::BackupOverdue, severity: Severity::Critical },
    RuleInfo { kind: AlertKind::AuditChainBroken, severity: Severity::Critical },
    RuleInfo { kind: AlertKind::VaultSealed, severity: Severity::Critical },
    RuleInfo { kind: AlertKind::VaultUnreachable, severity: Severity::Critical },
];

pub(super) fn severity_of(kind: AlertKind) -> Severity {
    RULES.iter().find(|r| r.kind == kind).map_or(Severity::Warning, |r| r.severity)
}

/// Days and hours (UTC) in which admins are expected to reveal passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHours {
    days: [bool; 7],
    start_min: u32,
    end_min: u32,
}

impl AllowedHours {
    /// Parses `"mon-fri 07:00-19:00"`, `"sat,sun 10:00-14:00"` or `"07:00-19:00"` (every day).
    /// An end before the start spans midnight (`22:00-06:00`).
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let (days_part, hours_part) = match text.split_once(' ') {
            Some((days, hours)) => (Some(days.trim()), hours.trim()),
            None => (None, text.as_str()),
        };
        let mut days = [days_part.is_none(); 7];
        if let Some(spec) = days_part {
            for item in spec.split(',') {
                match item.split_once('-') {
                    Some((from, to)) => {
                        let (from, to) = (weekday(from)?, weekday(to)?);
                        let mut day = from;
                        loop {
                            days[day] = true;
                            if day == to {
                                break;
                            }
                            day = (day + 1) % 7;
                        }
                    }
                    None => days[weekday(item)?] = true,
                }
            }
        }
        let (start, end) =
            hours_part.split_once('-').ok_or_else(|| format!("expected HH:MM-HH:MM in {hours_part:?}"))?;
        let (start_min, end_min) = (minutes(start)?, minutes(end)?);
        if start_min == end_min {
            return Err("the allowed hours are empty (start equals end)".into());
        }
        Ok(Self { days, start_min, end_min })
    }

    /// Whether `at` falls inside.
    #[must_use]
    pub fn allows(&self, at: DateTime<Utc>) -> bool {
        let minute = at.hour() * 60 + at.minute();
        let day = at.weekday().num_days_from_monday() as usize;
        if self.start_min < self.end_min {
            self.days[day] && (self.start_min..self.end_min).contains(&minute)
        } else if minute >= self.start_min {
            self.days[day]
        } else {
            // The early hours belong to the shift that began the day before.
            minute < self.end_min && self.days[(day + 6) % 7]
        }
    }
}

impl std::fmt::Display for AllowedHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let days: Vec<&str> = NAMES.iter().zip(self.days).filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{} {}-{}", days.join(","), hm(self.start_min), hm(self.end_min))
    }
}

pub(super) fn weekday(text: &str) -> std::result::Result<usize, String> {
    let day: Weekday = text.trim().parse().map_err(|_| format!("{text:?} is not a weekday (mon … sun)"))?;
    Ok(day.num_days_from_monday() as usize)
}

pub(super) fn minutes(text: &str) -> std::result::Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day (HH:MM)");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Thresholds of the rules.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    /// Reveals by one admin within the window that make a burst.
    pub reveal_burst_count: u32,
    /// A burst also when one admin reveals more than this many tenants within the window.
    pub reveal_burst_tenants: u32,
    /// The burst window.
    pub reveal_burst_window: Duration,
    /// When reveals are expected; `None`: any time.
    pub reveal_hours: Option<AllowedHours>,
    /// Failed logins (per email or per address) or re-auths (per admin) within the window.
    pub failed_auth_count: u32,
    /// The failed-attempt window.
    pub failed_auth_window: Duration,
    /// Age of the newest backup that raises `backup_overdue`.
    pub backup_max_age: Duration,
    /// Rules switched off.
    pub off: Vec<AlertKind>,
}

/// Parses `SMTP_VAULT_RULES_OFF`: each name must be a rule's alert kind.
///
/// # Errors
/// [`Error::Config`] naming the unknown rule and listing the known ones.
pub fn rules_off(names: &[String]) -> Result<Vec<AlertKind>> {
    let mut off = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let Some(rule) = RULES.iter().find(|r| r.kind.as_str() == name) else {
            let known: Vec<&str> = RULES.iter().map(|r| r.kind.as_str()).collect();
            return Err(Error::Config(format!(
                "SMTP_VAULT_RULES_OFF: unknown rule {name:?} (known: {})",
                known.join(", ")
            )));
        };
        off.push(rule.kind);
    }
    Ok(off)
}

/// Parses `SMTP_VAULT_RULE_REVEAL_HOURS`; unset or blank: any time.
///
/// # Errors
/// [`Error::Config`] naming the setting and what is malformed.
pub fn reveal_hours(text: Option<&str>) -> Result<Option<AllowedHours>> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => {
            AllowedHours::parse(text).map(Some).map_err(|e| Error::Config(format!("SMTP_VAULT_RULE_REVEAL_HOURS: {e}")))
        }
    }
}

impl RuleSettings {
    /// From the (already checked) configuration.
    #[must_use]
    pub fn from_config(config: &crate::core::config::Config) -> Self {
        Self {
            reveal_burst_count: config.rule_reveal_burst_count,
            reveal_burst_tenants: config.rule_reveal_burst_tenants,
            reveal_burst_window: Duration::minutes(i64::from(config.rule_reveal_burst_minutes)),
            reveal_hours: config.rule_reveal_hours.clone(),
            failed_auth_count: config.rule_failed_auth_count,
            failed_auth_window: Duration::minutes(i64::from(config.rule_failed_auth_minutes)),
            backup_max_age: Duration::hours(i64::from(config.rule_backup_max_age_hours)),
            off: config.rules_off.clone(),
        }
    }

    pub(super) fn on(&self, kind: AlertKind) -> bool {
        !self.off.contains(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap_or_default()
    }

    #[test]
    fn office_hours_on_weekdays() {
        let hours = AllowedHours::parse("Mon-Fri 07:00-19:00").unwrap_or_else(|e| panic!("{e}"));
        // 2026-12-02 is a Wednesday.
        assert!(hours.allows(at(2026, 12, 2, 7, 0)));
        assert!(hours.allows(at(2026, 12, 2, 18, 59)));
        assert!(!hours.allows(at(2026, 12, 2, 19, 0)));
        assert!(!hours.allows(at(2026, 12, 2, 6, 59)));
        assert!(!hours.allows(at(2026, 12, 5, 12, 0)), "Saturday");
    }

    #[test]
    fn a_night_shift_spans_midnight_and_belongs_to_its_first_day() {
        let hours = AllowedHours::parse("fri 22:00-06:00").unwrap_or_else(|e| panic!("{e}"));
        assert!(hours.allows(at(2026, 12, 4, 23, 0)), "Friday night");
        assert!(hours.allows(at(2026, 12, 5, 5, 59)), "early Saturday is Friday's shift");
        assert!(!hours.allows(at(2026, 12, 5, 23, 0)), "Saturday night");
        assert!(!hours.allows(at(2026, 12, 4, 5, 0)), "early Friday is Thursday's shift");
    }

    #[test]
    fn every_day_and_lists_and_wrapping_ranges() {
        let all = AllowedHours::parse("08:00-17:30").unwrap_or_else(|e| panic!("{e}"));
        assert!(all.allows(at(2026, 12, 6, 17, 29)));
        assert!(!all.allows(at(2026, 12, 6, 17, 30)));
        let weekend = AllowedHours::parse("sat,sun 00:00-24:00").unwrap_or_else(|e| panic!("{e}"));
        assert!(weekend.allows(at(2026, 12, 6, 23, 59)));
        assert!(!weekend.allows(at(2026, 12, 7, 0, 0)));
        let wrap = AllowedHours::parse("sat-mon 09:00-10:00").unwrap_or_else(|e| panic!("{e}"));
        assert!(wrap.allows(at(2026, 12, 7, 9, 30)), "Monday");
        assert!(!wrap.allows(at(2026, 12, 8, 9, 30)), "Tuesday");
    }

    #[test]
    fn malformed_hours_say_what_is_wrong() {
        for (text, needle) in [
            ("funday 07:00-19:00", "not a weekday"),
            ("07:00", "HH:MM-HH:MM"),
            ("7-19", "time of day"),
            ("25:00-26:00", "time of day"),
            ("09:00-09:00", "empty"),
        ] {
            match AllowedHours::parse(text) {
                Ok(hours) => panic!("{text} parsed as {hours:?}"),
                Err(err) => assert!(err.contains(needle), "{text}: {err}"),
            }
        }
    }

    #[test]
    fn settings_refuse_unknown_rules_and_bad_hours_with_the_setting_named() {
        let off = rules_off(&["login_new_ip".into(), " ".into()]).unwrap_or_else(|e| panic!("{e}"));
        let mut config = crate::core::config::Config::defaults();
        config.rules_off = off;
        let settings = RuleSettings::from_config(&config);
        assert!(!settings.on(AlertKind::LoginNewIp) && settings.on(AlertKind::RevealBurst));
        let refused = |result: Result<_>| match result {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        let err = refused(rules_off(&["login_new_ipp".into()]).map(|_| ()));
        assert!(err.contains("SMTP_VAULT_RULES_OFF") && err.contains("login_new_ipp"), "{err}");
        // A kind that no rule raises cannot be switched off.
        assert!(rules_off(&["emergency_reset".into()]).is_err());
        let err = refused(reveal_hours(Some("weekdays 9-5")).map(|_| ()));
        assert!(err.contains("SMTP_VAULT_RULE_REVEAL_HOURS"), "{err}");
        assert!(reveal_hours(Some("  ")).is_ok_and(|h| h.is_none()));
        let hours = reveal_hours(Some("Mon-Fri 07:00-19:00")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hours.map(|h| h.to_string()).as_deref(), Some("mon,tue,wed,thu,fri 07:00-19:00"));
    }
}
