//! `config show`: every effective option with its value (secrets masked) and where it came from.

use std::process::ExitCode;

use aos_config::OptionSource;
use aos_daemon::CommonArgs;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Print every option: section, key, effective value, source (default or file).
    Show,
}

pub fn run(common: &CommonArgs, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Show => show(common),
    }
}

fn show(common: &CommonArgs) -> anyhow::Result<ExitCode> {
    let loaded = common.load()?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let rows: Vec<[String; 4]> = loaded
        .effective_options()
        .into_iter()
        .map(|option| {
            let source = match &option.source {
                OptionSource::Default => "default".to_owned(),
                OptionSource::File(path) => path.display().to_string(),
            };
            [option.section.to_string(), option.key.to_string(), option.value, source]
        })
        .collect();
    print_table(&["Section", "Key", "Value", "Source"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// Prints a `|`-separated table with padded columns, the format the reference tool uses.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: [usize; N] = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out!("{}", padded.join(" | ").trim_end());
    };
    line(header.to_vec());
    out!("{}", widths.iter().map(|width| "-".repeat(*width)).collect::<Vec<_>>().join("-+-"));
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
