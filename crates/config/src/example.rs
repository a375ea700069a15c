//! Rendering of the shipped example files `etc/aos/aos.conf.example` and
//! `etc/aos/cloud_manager.conf.example` from the option table, so documentation and code
//! cannot disagree. A unit test compares the shipped files with [`render_example`]; run
//! `AOS_REGENERATE_EXAMPLES=1 cargo test -p aos-config` to rewrite them after changing a
//! definition.
//!
//! Each option is written commented out, with its default, after its help text and its type
//! and range, so uncommenting a line is the whole edit an operator makes.

use crate::definitions::{ExampleFile, OPTIONS, OptionDef};

/// Help text is wrapped to keep the files readable in an 80-column terminal.
const WIDTH: usize = 79;

/// The commented example file documenting every option assigned to `file`.
pub fn render_example(file: ExampleFile) -> String {
    let mut out = String::new();
    out.push_str(header(file));
    let mut current_section = None;
    for def in OPTIONS.iter().filter(|def| def.file == file) {
        if current_section != Some(def.section) {
            out.push_str(&format!("\n[{}]\n", def.section));
            current_section = Some(def.section);
        }
        out.push('\n');
        render_option(&mut out, def);
    }
    out
}

fn header(file: ExampleFile) -> &'static str {
    match file {
        ExampleFile::AosConf => {
            "# /etc/aos/aos.conf: settings shared by the AccentOS modules of this host
# (logging, message broker, Keystone credentials, database pool, coordination).
# /etc/aos/cloud_manager.conf and --config-file override what is set here.
#
# Every option is shown commented out with its default value.
# Generated from crates/config/src/definitions.rs; do not edit by hand, run
# AOS_REGENERATE_EXAMPLES=1 cargo test -p aos-config instead.
"
        }
        ExampleFile::CloudManagerConf => {
            "# /etc/aos/cloud_manager.conf: settings of CloudManager. Options set here
# override the same options in /etc/aos/aos.conf. The logging level is set in
# aos.conf.
#
# Every option is shown commented out with its default value.
# Generated from crates/config/src/definitions.rs; do not edit by hand, run
# AOS_REGENERATE_EXAMPLES=1 cargo test -p aos-config instead.
"
        }
    }
}

fn render_option(out: &mut String, def: &OptionDef) {
    let secret = if def.secret { ", secret" } else { "" };
    // The type and range stay together on one line: "(integer seconds, >= 1)".
    let kind = format!("({}{secret})", def.kind.describe());
    let words = def.help.split_whitespace().chain(std::iter::once(kind.as_str()));
    for line in wrap(words, WIDTH - 2) {
        out.push_str("# ");
        out.push_str(&line);
        out.push('\n');
    }
    if def.default.is_empty() {
        out.push_str(&format!("#{} =\n", def.key));
    } else {
        out.push_str(&format!("#{} = {}\n", def.key, def.default));
    }
}

/// Greedy word wrap; a word longer than `width` (a URL) gets a line of its own.
fn wrap<'a>(words: impl Iterator<Item = &'a str>, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in words {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn shipped_path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../etc/aos").join(name)
    }

    /// The shipped example files must equal what the option table renders. After changing a
    /// definition, regenerate them with `AOS_REGENERATE_EXAMPLES=1 cargo test -p aos-config`
    /// (the test then writes the files instead of comparing) and commit the result.
    #[test]
    fn shipped_example_files_are_current() {
        let regenerate = std::env::var("AOS_REGENERATE_EXAMPLES").is_ok_and(|value| value == "1");
        for (file, name) in
            [(ExampleFile::AosConf, "aos.conf.example"), (ExampleFile::CloudManagerConf, "cloud_manager.conf.example")]
        {
            let path = shipped_path(name);
            let rendered = render_example(file);
            if regenerate {
                std::fs::write(&path, &rendered).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                continue;
            }
            let shipped = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            assert!(
                shipped == rendered,
                "{} is out of date; run AOS_REGENERATE_EXAMPLES=1 cargo test -p aos-config",
                path.display()
            );
        }
    }

    #[test]
    fn options_are_commented_out_after_help_type_and_range() {
        let example = render_example(ExampleFile::CloudManagerConf);
        assert!(
            example.contains(
                "# ones. If this number is exceeded, automatic evacuation is not performed for\n\
                 # any of the nodes. Negative numbers are not allowed. (integer, >= 0)\n\
                 #max_down_hosts = 0\n"
            ),
            "{example}"
        );
        for line in example.lines().chain(render_example(ExampleFile::AosConf).lines()) {
            assert!(line.len() <= WIDTH || !line.starts_with("# "), "comment too long: {line}");
        }
        assert!(example.contains("#logfile =\n"));
        assert!(example.contains("#url = mysql+pymysql://aos:password@localhost:3306/cloud_manager?charset=utf8\n"));
    }

    /// Uncommenting every option line of both examples must give a valid configuration equal
    /// to the defaults, with each option taken from the file the table assigns it to.
    #[test]
    fn uncommented_examples_load_back_as_the_defaults() {
        let uncommented = |file| -> String {
            render_example(file)
                .lines()
                .filter(|line| !line.starts_with("# ") && *line != "#")
                .map(|line| line.strip_prefix('#').unwrap_or(line))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let loaded = crate::load_from_str(&[
            ("aos.conf", &uncommented(ExampleFile::AosConf)),
            ("cloud_manager.conf", &uncommented(ExampleFile::CloudManagerConf)),
        ])
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config, crate::Config::from_defaults());
        for (option, def) in loaded.effective_options().iter().zip(OPTIONS) {
            let expected = match def.file {
                ExampleFile::AosConf => "aos.conf",
                ExampleFile::CloudManagerConf => "cloud_manager.conf",
            };
            assert_eq!(
                option.source,
                crate::OptionSource::File(PathBuf::from(expected)),
                "[{}] {}",
                def.section,
                def.key
            );
        }
    }
}
