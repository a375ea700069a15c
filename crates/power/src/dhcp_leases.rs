//! ISC dhcpd lease files (`[DEFAULT] dhcp_leases`), to find the address a host booted with.
//!
//! The file is a journal (dhcpd.leases(5)): dhcpd appends a `lease ADDRESS { ... }` block at
//! every change, so a later block for the same address supersedes an earlier one; several
//! files are read in the configured order with the same rule. A lease is live when its
//! `binding state` is `active` and it `ends never` or after now (times are UTC). Blocks of
//! other kinds (`host`, `failover peer`, `lease6`/`ia-na`, ...) are skipped. A malformed
//! block is reported with its file and line and skipped; it never stops the reading.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::mac::MacAddress;

/// `binding state` of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingState {
    Active,
    Free,
    Abandoned,
    Expired,
    Released,
    Backup,
    Other(String),
}

impl BindingState {
    fn parse(word: &str) -> BindingState {
        match word {
            "active" => BindingState::Active,
            "free" => BindingState::Free,
            "abandoned" => BindingState::Abandoned,
            "expired" => BindingState::Expired,
            "released" => BindingState::Released,
            "backup" => BindingState::Backup,
            other => BindingState::Other(other.to_owned()),
        }
    }
}

/// When a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEnd {
    At(DateTime<Utc>),
    Never,
}

/// One lease block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub address: IpAddr,
    pub mac: Option<MacAddress>,
    /// `None` when the block has no `binding state` (old dhcpd versions): not live.
    pub state: Option<BindingState>,
    pub starts: Option<DateTime<Utc>>,
    pub ends: Option<LeaseEnd>,
    pub client_hostname: Option<String>,
    pub file: PathBuf,
    pub line: usize,
}

impl Lease {
    /// Active and not ended at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.state == Some(BindingState::Active)
            && match self.ends {
                Some(LeaseEnd::Never) => true,
                Some(LeaseEnd::At(end)) => end > now,
                None => false,
            }
    }
}

/// Something wrong in a lease file, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseProblem {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LeaseProblem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// The current lease of every address, after reading all files in order.
#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    /// Latest block per address.
    pub leases: BTreeMap<IpAddr, Lease>,
    pub problems: Vec<LeaseProblem>,
    /// Configured files that do not exist (the default lists two paths; usually one exists).
    pub missing_files: Vec<PathBuf>,
}

impl LeaseTable {
    /// Reads `paths` in order (later files and later blocks win).
    pub fn read(paths: &[PathBuf]) -> LeaseTable {
        let mut table = LeaseTable::default();
        for path in paths {
            match std::fs::read(path) {
                Ok(bytes) => table.add(path, &String::from_utf8_lossy(&bytes)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => table.missing_files.push(path.clone()),
                Err(error) => table.problems.push(LeaseProblem {
                    file: path.clone(),
                    line: 0,
                    message: format!("cannot read: {error}"),
                }),
            }
        }
        for problem in &table.problems {
            tracing::warn!(%problem, "malformed DHCP lease file entry skipped");
        }
        table
    }

    /// Adds the blocks of one file's text.
    pub fn add(&mut self, file: &Path, text: &str) {
        let (leases, problems) = parse_leases(file, text);
        for lease in leases {
            self.leases.insert(lease.address, lease);
        }
        self.problems.extend(problems);
    }

    /// The address `mac` currently holds: among its live leases, the one that started last
    /// (a host that moved keeps its old lease until it expires).
    pub fn address_of(&self, mac: MacAddress, now: DateTime<Utc>) -> Option<IpAddr> {
        self.leases
            .values()
            .filter(|lease| lease.mac == Some(mac) && lease.is_live(now))
            .max_by_key(|lease| lease.starts)
            .map(|lease| lease.address)
    }

    /// Every live MAC → address, for bulk lookups.
    pub fn live_addresses(&self, now: DateTime<Utc>) -> BTreeMap<MacAddress, IpAddr> {
        let mut live: BTreeMap<MacAddress, (Option<DateTime<Utc>>, IpAddr)> = BTreeMap::new();
        for lease in self.leases.values().filter(|lease| lease.is_live(now)) {
            if let Some(mac) = lease.mac {
                let entry = live.entry(mac).or_insert((lease.starts, lease.address));
                if lease.starts > entry.0 {
                    *entry = (lease.starts, lease.address);
                }
            }
        }
        live.into_iter().map(|(mac, (_, address))| (mac, address)).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    End,
}

/// Splits the file into tokens with their line numbers; an unterminated string is a problem
/// and ends the file.
fn tokenize(file: &Path, text: &str, problems: &mut Vec<LeaseProblem>) -> Vec<(Token, usize)> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '{' => tokens.push((Token::Open, line)),
            '}' => tokens.push((Token::Close, line)),
            ';' => tokens.push((Token::End, line)),
            '"' => {
                let start = line;
                let mut value = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push('\\');
                                value.push(escaped);
                            }
                        }
                        '\n' => {
                            line += 1;
                            value.push(c);
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    problems.push(LeaseProblem {
                        file: file.to_owned(),
                        line: start,
                        message: "unterminated string".into(),
                    });
                    return tokens;
                }
                tokens.push((Token::Text(value), start));
            }
            c => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || "{};\"#".contains(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push((Token::Word(word), line));
            }
        }
    }
    tokens
}

/// Parses one file's text into its lease blocks (in file order) and its problems.
pub fn parse_leases(file: &Path, text: &str) -> (Vec<Lease>, Vec<LeaseProblem>) {
    let mut problems = Vec::new();
    let tokens = tokenize(file, text, &mut problems);
    let mut leases = Vec::new();
    let mut position = 0;
    let problem = |line: usize, message: String| LeaseProblem { file: file.to_owned(), line, message };
    while position < tokens.len() {
        // One top-level statement: words up to `;` or `{`.
        let start_line = tokens[position].1;
        let mut header = Vec::new();
        while position < tokens.len() && !matches!(tokens[position].0, Token::End | Token::Open | Token::Close) {
            header.push(tokens[position].0.clone());
            position += 1;
        }
        let Some((terminator, _)) = tokens.get(position) else {
            if !header.is_empty() {
                problems.push(problem(start_line, "statement without `;` at the end of the file".into()));
            }
            break;
        };
        position += 1;
        match terminator {
            Token::End => {}
            Token::Close => problems.push(problem(start_line, "`}` without a block".into())),
            Token::Open => {
                let is_lease = matches!(header.first(), Some(Token::Word(word)) if word == "lease");
                let body_start = position;
                let (body_end, closed) = block_end(&tokens, position, is_lease);
                position = if closed { body_end + 1 } else { body_end };
                if !is_lease {
                    if !closed {
                        problems.push(problem(start_line, "block not closed".into()));
                    }
                    continue;
                }
                if !closed {
                    problems.push(problem(start_line, "lease block not closed with `}`".into()));
                    continue;
                }
                match parse_lease(file, start_line, &header, &tokens[body_start..body_end]) {
                    Ok(lease) => leases.push(lease),
                    Err(message) => problems.push(problem(start_line, message)),
                }
            }
            Token::Word(_) | Token::Text(_) => unreachable!("the loop above stops only at a terminator"),
        }
    }
    (leases, problems)
}

/// The index of the `}` closing the block whose body starts at `start`, and whether it was
/// found. In a lease, a nested `lease ... {` means the `}` is missing: stop before it.
fn block_end(tokens: &[(Token, usize)], start: usize, is_lease: bool) -> (usize, bool) {
    let mut depth = 0usize;
    let mut index = start;
    let mut statement_start = true;
    while index < tokens.len() {
        match &tokens[index].0 {
            Token::Open => depth += 1,
            Token::Close if depth == 0 => return (index, true),
            Token::Close => depth -= 1,
            Token::Word(word) if is_lease && depth == 0 && statement_start && word == "lease" => {
                return (index, false);
            }
            _ => {}
        }
        statement_start = matches!(tokens[index].0, Token::End | Token::Open | Token::Close);
        index += 1;
    }
    (index, false)
}

fn parse_lease(file: &Path, line: usize, header: &[Token], body: &[(Token, usize)]) -> Result<Lease, String> {
    let address = match header {
        [_, Token::Word(address)] => {
            address.parse::<IpAddr>().map_err(|_| format!("`lease {address}`: not an IP address"))?
        }
        _ => return Err("expected `lease ADDRESS {`".into()),
    };
    let mut lease = Lease {
        address,
        mac: None,
        state: None,
        starts: None,
        ends: None,
        client_hostname: None,
        file: file.to_owned(),
        line,
    };
    let mut depth = 0usize;
    let mut statement: Vec<&Token> = Vec::new();
    for (token, token_line) in body {
        match token {
            Token::Open => {
                depth += 1;
                statement.clear();
            }
            Token::Close => {
                depth = depth.saturating_sub(1);
                statement.clear();
            }
            Token::End if depth == 0 => {
                apply_statement(&mut lease, &statement).map_err(|message| format!("line {token_line}: {message}"))?;
                statement.clear();
            }
            Token::End => statement.clear(),
            other if depth == 0 => statement.push(other),
            _ => {}
        }
    }
    Ok(lease)
}

fn words<'a>(statement: &[&'a Token]) -> Vec<&'a str> {
    statement
        .iter()
        .map(|token| match token {
            Token::Word(word) | Token::Text(word) => word.as_str(),
            _ => "",
        })
        .collect()
}

fn apply_statement(lease: &mut Lease, statement: &[&Token]) -> Result<(), String> {
    let words = words(statement);
    match words.as_slice() {
        ["starts", rest @ ..] => lease.starts = Some(parse_time(rest)?),
        ["ends", "never"] => lease.ends = Some(LeaseEnd::Never),
        ["ends", rest @ ..] => lease.ends = Some(LeaseEnd::At(parse_time(rest)?)),
        ["binding", "state", state] => lease.state = Some(BindingState::parse(state)),
        ["hardware", "ethernet", mac] => lease.mac = Some(mac.parse()?),
        ["client-hostname", name] => lease.client_hostname = Some((*name).to_owned()),
        _ => {}
    }
    Ok(())
}

/// `W YYYY/MM/DD HH:MM:SS` (UTC; W the weekday, ignored) or `epoch SECONDS`.
fn parse_time(words: &[&str]) -> Result<DateTime<Utc>, String> {
    match words {
        ["epoch", seconds] => seconds
            .parse::<i64>()
            .ok()
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
            .ok_or_else(|| format!("bad epoch time {seconds:?}")),
        [_weekday, date, time] => NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y/%m/%d %H:%M:%S")
            .map(|naive| naive.and_utc())
            .map_err(|_| format!("bad time `{date} {time}` (expected YYYY/MM/DD HH:MM:SS)")),
        other => Err(format!("bad time `{}`", other.join(" "))),
    }
}
