//! Raw configuration: finding the files in layering order, parsing them as ini, and keeping
//! every assignment with its provenance (file, section, key) before anything is interpreted.
//!
//! Layering, lowest to highest precedence, as in oslo.config:
//! built-in defaults < `/etc/aos/aos.conf` < `/etc/aos/cloud_manager.conf` (these two only when
//! asked for and present) < each `--config-file` in order < the `*.conf` files of each
//! `--config-dir`, in lexical order. Later assignments win; within one file the last assignment
//! of a key wins. Keys and sections are case-sensitive, `[DEFAULT]` is an ordinary section.
//!
//! Values stay strings here; `validate` turns them into typed values. Keeping all assignments
//! (not only the winning ones) lets validation warn about every misspelt key in every file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::LoadOptions;
use crate::error::ConfigProblem;

/// One `key = value` line of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawValue {
    pub file: PathBuf,
    pub section: String,
    pub key: String,
    pub value: String,
}

/// All assignments of all files, in layering order.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    values: Vec<RawValue>,
    /// Index into `values` of the winning (last) assignment of each (section, key).
    winners: HashMap<(String, String), usize>,
    files_read: Vec<PathBuf>,
}

impl RawConfig {
    /// Parses `(path, text)` pairs given in layering order (lowest precedence first).
    pub fn from_sources(sources: Vec<(PathBuf, String)>) -> Result<Self, Vec<ConfigProblem>> {
        let mut raw = RawConfig::default();
        let mut problems = Vec::new();
        for (path, text) in sources {
            match parse_ini(&path, &text) {
                Ok(values) => {
                    for value in values {
                        raw.winners.insert((value.section.clone(), value.key.clone()), raw.values.len());
                        raw.values.push(value);
                    }
                }
                Err(mut file_problems) => problems.append(&mut file_problems),
            }
            raw.files_read.push(path);
        }
        if problems.is_empty() { Ok(raw) } else { Err(problems) }
    }

    /// The assignment that decides `[section] key`, if any file sets it.
    pub fn effective(&self, section: &str, key: &str) -> Option<&RawValue> {
        self.winners.get(&(section.to_owned(), key.to_owned())).map(|&index| &self.values[index])
    }

    /// Every assignment, in layering order.
    pub fn values(&self) -> &[RawValue] {
        &self.values
    }

    pub fn files_read(&self) -> &[PathBuf] {
        &self.files_read
    }
}

/// Parses one ini text. Follows oslo.config's parser where rust-ini differs by default: no
/// backslash escapes, indented lines continue the previous value, and one pair of matching
/// surrounding quotes is stripped from a value.
fn parse_ini(path: &Path, text: &str) -> Result<Vec<RawValue>, Vec<ConfigProblem>> {
    let options = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        enabled_preserve_key_leading_whitespace: false,
    };
    let document = ini::Ini::load_from_str_opt(text, options).map_err(|error| {
        vec![ConfigProblem::Syntax {
            path: path.to_owned(),
            line: error.line,
            column: error.col,
            message: error.msg.into_owned(),
        }]
    })?;
    let mut values = Vec::new();
    let mut problems = Vec::new();
    for (section, properties) in document.iter() {
        for (key, value) in properties.iter() {
            let Some(section) = section else {
                problems.push(ConfigProblem::OutsideSection { path: path.to_owned(), key: key.to_owned() });
                continue;
            };
            values.push(RawValue {
                file: path.to_owned(),
                section: section.to_owned(),
                key: key.trim().to_owned(),
                value: strip_matching_quotes(value.trim()).to_owned(),
            });
        }
    }
    if problems.is_empty() { Ok(values) } else { Err(problems) }
}

fn strip_matching_quotes(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// The files to read, in layering order. `default_files` is a parameter (normally
/// [`crate::DEFAULT_CONFIG_FILES`]) so that tests can point it at a temporary directory.
pub(crate) fn files_in_layering_order(
    options: &LoadOptions,
    default_files: &[&Path],
) -> Result<Vec<PathBuf>, Vec<ConfigProblem>> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    if options.default_files {
        // The system files are optional: a host may use only --config-file.
        files.extend(default_files.iter().filter(|path| path.exists()).map(|path| path.to_path_buf()));
    }
    for path in &options.config_files {
        if path.exists() {
            files.push(path.clone());
        } else {
            problems.push(ConfigProblem::MissingFile { path: path.clone() });
        }
    }
    for directory in &options.config_dirs {
        match conf_files_of_directory(directory) {
            Ok(mut found) => files.append(&mut found),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() { Ok(files) } else { Err(problems) }
}

/// `*.conf` files of a directory in lexical order, as oslo.config's `--config-dir` reads them.
fn conf_files_of_directory(directory: &Path) -> Result<Vec<PathBuf>, ConfigProblem> {
    if !directory.is_dir() {
        return Err(ConfigProblem::MissingDirectory { path: directory.to_owned() });
    }
    let unreadable =
        |error: std::io::Error| ConfigProblem::Unreadable { path: directory.to_owned(), message: error.to_string() };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        // `is_file` follows symlinks, so a linked drop-in counts like a copied one.
        if path.extension().is_some_and(|extension| extension == "conf") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and parses the files of `options` in layering order, collecting every problem.
pub(crate) fn read_layered(options: &LoadOptions, default_files: &[&Path]) -> Result<RawConfig, Vec<ConfigProblem>> {
    let files = files_in_layering_order(options, default_files)?;
    let mut sources = Vec::with_capacity(files.len());
    let mut problems = Vec::new();
    for path in files {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(error) => problems.push(ConfigProblem::Unreadable { path, message: error.to_string() }),
        }
    }
    let parsed = RawConfig::from_sources(sources);
    match parsed {
        Ok(raw) if problems.is_empty() => Ok(raw),
        Ok(_) => Err(problems),
        Err(mut parse_problems) => {
            problems.append(&mut parse_problems);
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(sources: &[(&str, &str)]) -> RawConfig {
        RawConfig::from_sources(sources.iter().map(|(path, text)| (PathBuf::from(path), text.to_string())).collect())
            .unwrap()
    }

    #[test]
    fn later_file_wins_and_keeps_its_provenance() {
        let raw = raw(&[
            ("a.conf", "[node_tracker]\nloop_time = 10\nmutex = 2\n"),
            ("b.conf", "[node_tracker]\nloop_time=20\n"),
        ]);
        let loop_time = raw.effective("node_tracker", "loop_time").unwrap();
        assert_eq!((loop_time.value.as_str(), loop_time.file.as_path()), ("20", Path::new("b.conf")));
        assert_eq!(raw.effective("node_tracker", "mutex").unwrap().file, Path::new("a.conf"));
        assert_eq!(raw.files_read(), [PathBuf::from("a.conf"), PathBuf::from("b.conf")]);
    }

    #[test]
    fn last_assignment_in_one_file_wins_even_across_repeated_sections() {
        let raw = raw(&[("a.conf", "[api]\nport = 1\n[agent]\nenabled = true\n[api]\nport = 2\n")]);
        assert_eq!(raw.effective("api", "port").unwrap().value, "2");
    }

    #[test]
    fn values_are_trimmed_unescaped_and_unquoted_like_oslo() {
        let raw = raw(&[(
            "a.conf",
            "[DEFAULT]\n  host   =   ctl-1  \nlog_dir =\nq = \"quoted value\"\nb = C:\\temp\n\
             [host_tasks]\ndeny_evacuate = a,\n    b\n# comment\n; other comment\n",
        )]);
        assert_eq!(raw.effective("DEFAULT", "host").unwrap().value, "ctl-1");
        assert_eq!(raw.effective("DEFAULT", "log_dir").unwrap().value, "");
        assert_eq!(raw.effective("DEFAULT", "q").unwrap().value, "quoted value");
        assert_eq!(raw.effective("DEFAULT", "b").unwrap().value, "C:\\temp");
        assert_eq!(raw.effective("host_tasks", "deny_evacuate").unwrap().value, "a,\nb");
    }

    #[test]
    fn keys_and_sections_are_case_sensitive() {
        let raw = raw(&[("a.conf", "[API]\nport = 1\n[api]\nPort = 2\n")]);
        assert!(raw.effective("api", "port").is_none());
        assert_eq!(raw.effective("API", "port").unwrap().value, "1");
    }

    #[test]
    fn assignments_before_any_section_are_rejected() {
        let problems =
            RawConfig::from_sources(vec![(PathBuf::from("a.conf"), "debug = true\n[DEFAULT]\n".into())]).unwrap_err();
        assert_eq!(problems[0].to_string(), "a.conf: `debug` is set before any [section] header");
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let problems =
            RawConfig::from_sources(vec![(PathBuf::from("a.conf"), "[api]\nport = 1\n= 3\n".into())]).unwrap_err();
        let message = problems[0].to_string();
        assert!(message.starts_with("a.conf: line 3,"), "{message}");
        let problems = RawConfig::from_sources(vec![(PathBuf::from("a.conf"), "=\n".into())]).unwrap_err();
        let message = problems[0].to_string();
        assert!(message.starts_with("a.conf: line 1,"), "{message}");
    }

    #[test]
    fn layering_order_is_defaults_then_files_then_directories() {
        let temp = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let path = temp.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "").unwrap();
            path
        };
        let aos = write("aos.conf");
        let cloud_manager = temp.path().join("cloud_manager.conf"); // absent: skipped silently
        let second = write("second.conf");
        let first = write("first.conf");
        let dir_b = write("dir/b.conf");
        let dir_a = write("dir/a.conf");
        write("dir/ignored.conf.bak");
        let options = LoadOptions {
            config_files: vec![second.clone(), first.clone()],
            config_dirs: vec![temp.path().join("dir")],
            default_files: true,
        };
        let files = files_in_layering_order(&options, &[&aos, &cloud_manager]).unwrap();
        assert_eq!(files, vec![aos.clone(), second.clone(), first.clone(), dir_a, dir_b]);

        let without_defaults = LoadOptions { default_files: false, ..options };
        assert_eq!(files_in_layering_order(&without_defaults, &[&aos]).unwrap()[0], second);
    }

    #[test]
    fn missing_named_file_and_directory_are_errors_naming_the_path() {
        let options = LoadOptions {
            config_files: vec!["/nonexistent/aos-test.conf".into()],
            config_dirs: vec!["/nonexistent/aos-test.d".into()],
            default_files: false,
        };
        let problems = files_in_layering_order(&options, &[]).unwrap_err();
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "/nonexistent/aos-test.conf: config file not found",
                "/nonexistent/aos-test.d: config directory not found"
            ]
        );
    }
}
