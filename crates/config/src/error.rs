//! What loading can report: [`ConfigError`] (one or more [`ConfigProblem`]s, start-up must
//! stop) and [`ConfigWarning`] (worth an operator's attention, start-up goes on).
//!
//! Every message names where the value came from (file, or the built-in default), the
//! section, the key, the offending value (masked when secret) and why it is wrong, in the form
//! `/etc/aos/cloud_manager.conf: [node_tracker] loop_time = abc: not an integer`. All problems
//! of a load are collected, so an operator fixes a file in one pass rather than one error per
//! restart.

use std::fmt;
use std::path::PathBuf;

/// Where an option's effective value comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionSource {
    /// The built-in default of the option table.
    Default,
    /// The last file (in layering order) that set it.
    File(PathBuf),
}

impl fmt::Display for OptionSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionSource::Default => formatter.write_str("<built-in default>"),
            OptionSource::File(path) => write!(formatter, "{}", path.display()),
        }
    }
}

/// One reason a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    #[error("{}: config file not found", path.display())]
    MissingFile { path: PathBuf },
    #[error("{}: config directory not found", path.display())]
    MissingDirectory { path: PathBuf },
    #[error("{}: cannot read: {message}", path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error("{}: line {line}, column {column}: {message}", path.display())]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    /// oslo.config rejects assignments before the first `[section]` header; so do we, rather
    /// than guess which section was meant.
    #[error("{}: `{key}` is set before any [section] header", path.display())]
    OutsideSection { path: PathBuf, key: String },
    /// A value that does not fit its option's type or range. `value` is masked for secrets.
    #[error("{origin}: [{section}] {key} = {value}: {reason}")]
    InvalidValue { origin: OptionSource, section: String, key: String, value: String, reason: String },
}

/// Loading failed; holds every problem found: the files that cannot be found, read or parsed,
/// or, once all files parse, every bad value in option-table order. `Display` prints one per
/// line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub(crate) fn new(problems: Vec<ConfigProblem>) -> Self {
        debug_assert!(!problems.is_empty(), "a ConfigError without problems");
        Self { problems }
    }

    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                formatter.write_str("\n")?;
            }
            write!(formatter, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Something the operator should look at that does not stop start-up, such as a misspelt key
/// in a section we own (`[node_tracker] loop_tmie`) or a URL parameter we ignore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: PathBuf,
    pub section: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: [{}] {}: {}", self.file.display(), self.section, self.key, self.message)
    }
}
