//! Validation: turning the raw strings of `raw` into typed values, checked against the kind and
//! range of their row in `definitions`, and reporting every problem with its provenance.
//!
//! The pass runs in three steps:
//! 1. every assignment in a section we own whose key we do not know becomes a warning (a
//!    misspelt key must not be silently ignored; unknown *sections* belong to other modules
//!    sharing `aos.conf` and are skipped);
//! 2. every option of the table is parsed from its winning file value or its default; a bad
//!    value becomes a [`ConfigProblem`] and the option falls back to its default so that the
//!    remaining checks still run and all problems are reported at once;
//! 3. `sections` builds the typed [`Config`] from the parsed values and runs the cross-option
//!    checks, skipping any check that involves a value that already failed.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::definitions::{self, OPTIONS, OptionDef, OptionKind, UNBOUNDED};
use crate::error::{ConfigError, ConfigProblem, ConfigWarning, OptionSource};
use crate::raw::RawConfig;
use crate::sections::Config;
use crate::urls::{DatabaseUrl, TransportUrl, WithIgnored, mask_url_text};

/// One known option as `config show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EffectiveOption {
    pub section: &'static str,
    pub key: &'static str,
    /// The value as configured (or the default), with secrets already masked.
    pub value: String,
    pub source: OptionSource,
}

/// A parsed value of one option; the variant follows [`OptionKind`].
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Bool(bool),
    Integer(u32),
    Duration(Duration),
    Float(f64),
    Port(u16),
    /// `Text`, `Host` and `Choice` options.
    Text(String),
    Path(Option<PathBuf>),
    PathList(Vec<PathBuf>),
    TextList(Vec<String>),
    HttpUrl(url::Url),
    Database(Option<DatabaseUrl>),
    Transport(Option<TransportUrl>),
}

/// The result of a validation pass.
pub(crate) struct Validated {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
    pub effective: Vec<EffectiveOption>,
}

pub(crate) fn validate(raw: &RawConfig) -> Result<Validated, ConfigError> {
    let mut warnings = unknown_key_warnings(raw);
    let mut problems = Vec::new();
    let mut values = Values::default();
    let mut effective = Vec::with_capacity(OPTIONS.len());
    for def in OPTIONS {
        let (text, source) = match raw.effective(def.section, def.key) {
            Some(assignment) => (assignment.value.as_str(), OptionSource::File(assignment.file.clone())),
            None => (def.default, OptionSource::Default),
        };
        let shown = displayed_value(def, text);
        match parse_value(def, text) {
            Ok(parsed) => {
                if let OptionSource::File(file) = &source {
                    warnings.extend(parsed.ignored.into_iter().map(|message| ConfigWarning {
                        file: file.clone(),
                        section: def.section.to_owned(),
                        key: def.key.to_owned(),
                        message,
                    }));
                }
                values.insert(
                    def,
                    Entry { value: Some(parsed.value), source: source.clone(), shown: shown.clone(), valid: true },
                );
            }
            Err(reason) => {
                problems.push(ConfigProblem::InvalidValue {
                    origin: source.clone(),
                    section: def.section.to_owned(),
                    key: def.key.to_owned(),
                    value: shown.clone(),
                    reason,
                });
                // Carry on with the default so that the typed sections can still be built and
                // the remaining problems found; the load fails anyway.
                let fallback = parse_value(def, def.default).ok().map(|parsed| parsed.value);
                values
                    .insert(def, Entry { value: fallback, source: source.clone(), shown: shown.clone(), valid: false });
            }
        }
        effective.push(EffectiveOption { section: def.section, key: def.key, value: shown, source });
    }
    let config = Config::build(&mut values, &mut problems);
    debug_assert!(
        values.entries.is_empty(),
        "options defined but read by no section: {:?}",
        values.entries.keys().collect::<Vec<_>>()
    );
    if problems.is_empty() { Ok(Validated { config, warnings, effective }) } else { Err(ConfigError::new(problems)) }
}

fn unknown_key_warnings(raw: &RawConfig) -> Vec<ConfigWarning> {
    raw.values()
        .iter()
        .filter(|assignment| {
            definitions::is_known_section(&assignment.section)
                && definitions::find(&assignment.section, &assignment.key).is_none()
        })
        .map(|assignment| ConfigWarning {
            file: assignment.file.clone(),
            section: assignment.section.clone(),
            key: assignment.key.clone(),
            message: format!("unknown option in [{}], ignored", assignment.section),
        })
        .collect()
}

/// The text shown for a value in `config show` and error messages: secrets masked.
fn displayed_value(def: &OptionDef, text: &str) -> String {
    if !def.secret || text.is_empty() {
        return text.to_owned();
    }
    match def.kind {
        // The user and host of a URL help an operator; only the password is hidden.
        OptionKind::DatabaseUrl { .. } | OptionKind::TransportUrl { .. } => mask_url_text(text),
        _ => "***".to_owned(),
    }
}

/// Parses `text` as a value of `def`; the error is the reason, without file, section or key.
pub(crate) fn parse_value(def: &OptionDef, text: &str) -> Result<WithIgnored<Value>, String> {
    let plain = |value| Ok(WithIgnored { value, ignored: Vec::new() });
    let needs_value = || {
        if def.default.is_empty() {
            "must not be empty".to_owned()
        } else {
            format!("must not be empty (delete the line to use the default, {})", displayed_value(def, def.default))
        }
    };
    match def.kind {
        OptionKind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => plain(Value::Bool(true)),
            "false" | "no" | "off" | "0" => plain(Value::Bool(false)),
            "" => Err(needs_value()),
            _ => Err("not a boolean (use true/false, yes/no, on/off or 1/0)".to_owned()),
        },
        OptionKind::Integer { min, max } => {
            if text.is_empty() {
                return Err(needs_value());
            }
            plain(Value::Integer(parse_integer(text, min, max)?))
        }
        OptionKind::Duration { unit, min } => {
            if text.is_empty() {
                return Err(needs_value());
            }
            let count = parse_integer(text, min, UNBOUNDED)?;
            plain(Value::Duration(Duration::from_secs(u64::from(count) * unit.seconds())))
        }
        OptionKind::Float { min, max } => {
            if text.is_empty() {
                return Err(needs_value());
            }
            let number: f64 = text.parse().ok().filter(|number: &f64| number.is_finite()).ok_or("not a number")?;
            if number < min {
                return Err(format!("must be >= {min}"));
            }
            if number > max {
                return Err(format!("must be <= {max}"));
            }
            plain(Value::Float(number))
        }
        OptionKind::Port { min } => {
            if text.is_empty() {
                return Err(needs_value());
            }
            let port = parse_integer(text, u32::from(min), u32::from(u16::MAX))?;
            plain(Value::Port(u16::try_from(port).map_err(|_| "must be <= 65535".to_owned())?))
        }
        OptionKind::Text { allow_empty } => {
            if text.is_empty() && !allow_empty {
                return Err(needs_value());
            }
            plain(Value::Text(text.to_owned()))
        }
        OptionKind::Host { allow_empty } => {
            if text.is_empty() {
                return if allow_empty { plain(Value::Text(String::new())) } else { Err(needs_value()) };
            }
            if text.parse::<IpAddr>().is_err() && !is_host_name(text) {
                return Err("not a valid host name or IP address".to_owned());
            }
            plain(Value::Text(text.to_owned()))
        }
        OptionKind::Choice { choices } => {
            if !choices.contains(&text) {
                return Err(format!("must be one of: {}", choices.join(", ")));
            }
            plain(Value::Text(text.to_owned()))
        }
        OptionKind::Path { allow_empty } => match text {
            "" if allow_empty => plain(Value::Path(None)),
            "" => Err(needs_value()),
            path => plain(Value::Path(Some(PathBuf::from(path)))),
        },
        OptionKind::PathList => plain(Value::PathList(split_list(text).map(PathBuf::from).collect())),
        OptionKind::TextList => plain(Value::TextList(split_list(text).map(str::to_owned).collect())),
        OptionKind::HttpUrl => {
            let url = url::Url::parse(text).map_err(|error| format!("not a valid URL: {error}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err("must be an http:// or https:// URL with a host".to_owned());
            }
            plain(Value::HttpUrl(url))
        }
        OptionKind::DatabaseUrl { allow_empty } => {
            if text.is_empty() {
                return if allow_empty { plain(Value::Database(None)) } else { Err(needs_value()) };
            }
            let parsed = DatabaseUrl::parse_with_ignored(text).map_err(|error| error.to_string())?;
            Ok(WithIgnored { value: Value::Database(Some(parsed.value)), ignored: parsed.ignored })
        }
        OptionKind::TransportUrl { allow_empty } => {
            if text.is_empty() {
                return if allow_empty { plain(Value::Transport(None)) } else { Err(needs_value()) };
            }
            let parsed = TransportUrl::parse_with_ignored(text).map_err(|error| error.to_string())?;
            Ok(WithIgnored { value: Value::Transport(Some(parsed.value)), ignored: parsed.ignored })
        }
    }
}

/// Parses a non-negative integer, telling "not a number" apart from "out of range" so the
/// message says what to fix.
fn parse_integer(text: &str, min: u32, max: u32) -> Result<u32, String> {
    let number: i128 = text.parse().map_err(|_| {
        let digits = text.trim_start_matches(['+', '-']);
        if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) {
            format!("out of range (must be <= {max})")
        } else {
            "not an integer".to_owned()
        }
    })?;
    if number < i128::from(min) {
        return Err(if min == 0 {
            "must be >= 0 (negative values are not allowed)".to_owned()
        } else {
            format!("must be >= {min}")
        });
    }
    if number > i128::from(max) {
        return Err(format!("must be <= {max}"));
    }
    u32::try_from(number).map_err(|_| format!("must be <= {max}"))
}

/// oslo ListOpt semantics: comma-separated, items trimmed, empty items dropped (so an empty
/// value is an empty list).
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// RFC 1123 host name; underscores are tolerated because real hypervisor names contain them.
fn is_host_name(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
}

struct Entry {
    /// `None` only when the value and the built-in default both failed (a table bug).
    value: Option<Value>,
    source: OptionSource,
    shown: String,
    valid: bool,
}

/// Parsed values waiting to be moved into the typed sections. Each getter removes its entry,
/// so a row that no section reads is left over and trips the check in [`validate`].
///
/// A getter whose row has another kind panics: that is a mismatch between the static table
/// and `sections`, which every test that loads a configuration would hit.
#[derive(Default)]
pub(crate) struct Values {
    entries: HashMap<(&'static str, &'static str), Entry>,
    invalid: HashSet<(&'static str, &'static str)>,
    sources: HashMap<(&'static str, &'static str), (OptionSource, String)>,
}

macro_rules! getter {
    ($name:ident, $variant:ident, $type:ty) => {
        pub fn $name(&mut self, section: &'static str, key: &'static str) -> $type {
            match self.take(section, key) {
                Value::$variant(value) => value,
                other => mismatch(section, key, &other),
            }
        }
    };
}

impl Values {
    fn insert(&mut self, def: &'static OptionDef, entry: Entry) {
        let id = (def.section, def.key);
        if !entry.valid {
            self.invalid.insert(id);
        }
        self.sources.insert(id, (entry.source.clone(), entry.shown.clone()));
        self.entries.insert(id, entry);
    }

    fn take(&mut self, section: &'static str, key: &'static str) -> Value {
        let entry = self.entries.remove(&(section, key));
        match entry.and_then(|entry| entry.value) {
            Some(value) => value,
            None => {
                panic!("[{section}] {key}: not in the option table, read twice, or its built-in default is invalid")
            }
        }
    }

    /// Whether the option's configured value passed validation (cross-checks skip it if not).
    pub fn is_valid(&self, section: &'static str, key: &'static str) -> bool {
        !self.invalid.contains(&(section, key))
    }

    /// Source and displayed value of an option, for cross-option error messages.
    pub fn provenance(&self, section: &'static str, key: &'static str) -> (OptionSource, String) {
        self.sources.get(&(section, key)).cloned().unwrap_or((OptionSource::Default, String::new()))
    }

    getter!(bool, Bool, bool);
    getter!(integer, Integer, u32);
    getter!(duration, Duration, Duration);
    getter!(float, Float, f64);
    getter!(port, Port, u16);
    getter!(text, Text, String);
    getter!(path, Path, Option<PathBuf>);
    getter!(path_list, PathList, Vec<PathBuf>);
    getter!(text_list, TextList, Vec<String>);
    getter!(http_url, HttpUrl, url::Url);
    getter!(database_url, Database, Option<DatabaseUrl>);
    getter!(transport_url, Transport, Option<TransportUrl>);

    /// A port where 0 means "disabled".
    pub fn optional_port(&mut self, section: &'static str, key: &'static str) -> Option<u16> {
        Some(self.port(section, key)).filter(|&port| port != 0)
    }

    /// A path option that does not allow empty values.
    pub fn required_path(&mut self, section: &'static str, key: &'static str) -> PathBuf {
        self.path(section, key).unwrap_or_else(|| panic!("[{section}] {key}: defined as required, got empty"))
    }

    pub fn required_database_url(&mut self, section: &'static str, key: &'static str) -> DatabaseUrl {
        self.database_url(section, key).unwrap_or_else(|| panic!("[{section}] {key}: defined as required, got empty"))
    }

    pub fn required_transport_url(&mut self, section: &'static str, key: &'static str) -> TransportUrl {
        self.transport_url(section, key).unwrap_or_else(|| panic!("[{section}] {key}: defined as required, got empty"))
    }
}

fn mismatch(section: &str, key: &str, _value: &Value) -> ! {
    // The value itself is not printed: it may be a secret.
    panic!("[{section}] {key}: the option table gives it another kind than the section field reading it")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(section: &str, key: &str) -> &'static OptionDef {
        definitions::find(section, key).unwrap()
    }

    fn reason(section: &str, key: &str, text: &str) -> String {
        parse_value(def(section, key), text).err().unwrap_or_else(|| panic!("{text} accepted"))
    }

    #[test]
    fn booleans_accept_oslo_spellings_in_any_case() {
        for (text, expected) in [
            ("True", true),
            ("yes", true),
            ("ON", true),
            ("1", true),
            ("false", false),
            ("No", false),
            ("off", false),
            ("0", false),
        ] {
            match parse_value(def("agent", "enabled"), text).unwrap().value {
                Value::Bool(value) => assert_eq!(value, expected, "{text}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(reason("agent", "enabled", "enable").starts_with("not a boolean"));
    }

    #[test]
    fn integers_report_why_they_are_rejected() {
        assert_eq!(reason("node_tracker", "max_down_hosts", "-1"), "must be >= 0 (negative values are not allowed)");
        assert_eq!(reason("node_tracker", "loop_time", "abc"), "not an integer");
        assert_eq!(reason("node_tracker", "loop_time", "0"), "must be >= 1");
        assert_eq!(reason("node_tracker", "loop_time", "1.5"), "not an integer");
        assert_eq!(reason("extra_availability_check", "instance_rate", "101"), "must be <= 100");
        assert!(
            reason("node_tracker", "mutex", "99999999999999999999999999999999999999999").starts_with("out of range")
        );
        assert_eq!(reason("api", "port", "65536"), "must be <= 65535");
        assert_eq!(reason("drs", "port", "0"), "must be >= 1");
        assert_eq!(
            reason("node_tracker", "loop_time", ""),
            "must not be empty (delete the line to use the default, 30)"
        );
    }

    #[test]
    fn durations_are_converted_from_their_unit() {
        let duration = |section, key, text| match parse_value(def(section, key), text).unwrap().value {
            Value::Duration(duration) => duration,
            other => panic!("{other:?}"),
        };
        assert_eq!(duration("balancing", "periodic_time", "2"), Duration::from_secs(7200));
        assert_eq!(duration("node_tracker", "timeout_reserv_node_up", "15"), Duration::from_secs(900));
        assert_eq!(duration("node_tracker", "loop_time", "30"), Duration::from_secs(30));
    }

    #[test]
    fn floats_are_range_checked() {
        assert_eq!(reason("balancing", "approx", "1.5"), "must be <= 1");
        assert_eq!(reason("balancing", "approx", "-0.1"), "must be >= 0");
        assert_eq!(reason("balancing", "approx", "NaN"), "not a number");
        assert_eq!(reason("balancing", "approx", "x"), "not a number");
    }

    #[test]
    fn lists_are_comma_separated_and_trimmed() {
        match parse_value(def("host_tasks", "deny_evacuate"), " cmp-1, cmp-2 ,,\ncmp-3").unwrap().value {
            Value::TextList(hosts) => assert_eq!(hosts, ["cmp-1", "cmp-2", "cmp-3"]),
            other => panic!("{other:?}"),
        }
        match parse_value(def("host_tasks", "deny_evacuate"), "").unwrap().value {
            Value::TextList(hosts) => assert!(hosts.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hosts_choices_and_urls_are_checked() {
        assert_eq!(reason("api", "host", "not a host"), "not a valid host name or IP address");
        for ok in ["0.0.0.0", "::1", "ctl-1.example.org", "cmp_01"] {
            assert!(parse_value(def("api", "host"), ok).is_ok(), "{ok}");
        }
        assert_eq!(reason("keystone_authtoken", "interface", "Public"), "must be one of: public, internal, admin");
        assert!(reason("keystone_authtoken", "auth_url", "ftp://x/").starts_with("must be an http"));
        assert!(reason("keystone_authtoken", "auth_url", "127.0.0.1:5000").starts_with("not a valid URL"));
        assert_eq!(
            reason("keystone_authtoken", "username", ""),
            "must not be empty (delete the line to use the default, aos)"
        );
        assert_eq!(
            reason("pxe", "conf_dir", ""),
            "must not be empty (delete the line to use the default, /var/lib/tftpboot/pxelinux.cfg/)"
        );
    }

    #[test]
    fn secrets_are_masked_in_displayed_values() {
        assert_eq!(displayed_value(def("drs", "password"), "hunter2"), "***");
        assert_eq!(displayed_value(def("drs", "password"), ""), "");
        assert_eq!(displayed_value(def("database", "url"), "mysql://a:hunter2@h/db"), "mysql://a:***@h/db");
        assert_eq!(displayed_value(def("drs", "username"), "admin"), "admin");
    }
}
