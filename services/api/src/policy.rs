//! The policy engine: which roles may do which action, in oslo.policy's rule language so that
//! an OpenStack operator reads and edits it like Nova's.
//!
//! A rule is a boolean expression of checks: `role:admin`, `rule:admin_api` (another named
//! rule), `user_id:<id>`, `project_id:<id>`, `@` (always), `!` (never), the empty string
//! (always, as in oslo.policy), combined with `and`, `or`, `not` and parentheses.
//! `role:` compares case-insensitively (Keystone role names are case-insensitive).
//!
//! The defaults ([`DEFAULT_RULES`]) give every read to `reader`, `member` and `admin` and every
//! action that changes something (evacuate, maintenance, power, policy flags) to `admin` only;
//! `etc/aos/policy.json` ships them (a test keeps it identical). `[api] policy_file` overrides
//! rules by name; a file that does not parse, a rule that does not parse or a reference to a
//! rule that does not exist stops the daemon at start, naming the file and the rule.

use std::collections::BTreeMap;
use std::path::Path;

use aos_openstack::TokenInfo;

/// `(name, rule, description)`: the shipped defaults. Action names are
/// `cloud_manager:<resource>:<verb>`.
pub const DEFAULT_RULES: &[(&str, &str, &str)] = &[
    ("admin_api", "role:admin", "Administrators: may change things."),
    ("reader_api", "role:reader or role:member or role:admin", "Anyone with a role on a project: may read."),
    ("cloud_manager:node:list", "rule:reader_api", "GET /v1/nodes"),
    ("cloud_manager:node:show", "rule:reader_api", "GET /v1/nodes/{name}"),
    ("cloud_manager:node:history", "rule:reader_api", "GET /v1/nodes/{name}/history"),
    ("cloud_manager:node:evacuate", "rule:admin_api", "POST /v1/nodes/{name}/action evacuate (also dry_run)"),
    ("cloud_manager:node:maintenance", "rule:admin_api", "POST /v1/nodes/{name}/action maintenance"),
    ("cloud_manager:node:evacuation_policy", "rule:admin_api", "POST /v1/nodes/{name}/action evacuation"),
    ("cloud_manager:node:power_status", "rule:reader_api", "GET /v1/nodes/{name}/power"),
    ("cloud_manager:node:power_action", "rule:admin_api", "POST /v1/nodes/{name}/action power (on, off, reset)"),
    ("cloud_manager:power_device:list", "rule:reader_api", "GET /v1/power-devices"),
    ("cloud_manager:power_device:show", "rule:reader_api", "GET /v1/power-devices/{name}"),
    ("cloud_manager:reserve:list", "rule:reader_api", "GET /v1/reserve-bindings"),
    ("cloud_manager:storage:list", "rule:reader_api", "GET /v1/storages"),
    ("cloud_manager:task:list", "rule:reader_api", "GET /v1/tasks"),
    ("cloud_manager:task:show", "rule:reader_api", "GET /v1/tasks/{id}"),
    ("cloud_manager:event:list", "rule:reader_api", "GET /v1/events"),
    ("cloud_manager:alarm:list", "rule:reader_api", "GET /v1/alarms"),
    ("cloud_manager:balancing:preview", "rule:reader_api", "GET /v1/balancing/preview"),
    ("cloud_manager:balancing:run", "rule:admin_api", "POST /v1/balancing/runs"),
    ("cloud_manager:drs_audit:create", "rule:admin_api", "POST /v1/drs/audits"),
    ("cloud_manager:drs_audit:list", "rule:reader_api", "GET /v1/drs/audits"),
    ("cloud_manager:drs_audit:show", "rule:reader_api", "GET /v1/drs/audits/{id}"),
    ("cloud_manager:drs_plan:show", "rule:reader_api", "GET /v1/drs/plans/{id}"),
    ("cloud_manager:drs_plan:apply", "rule:admin_api", "POST /v1/drs/plans/{id}/apply"),
    ("cloud_manager:drs_plan:cancel", "rule:admin_api", "POST /v1/drs/plans/{id}/cancel"),
    ("cloud_manager:settings:show", "rule:admin_api", "GET /v1/settings (secrets masked)"),
];

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Always,
    Never,
    Role(String),
    Reference(String),
    UserId(String),
    ProjectId(String),
    Not(Box<Rule>),
    And(Vec<Rule>),
    Or(Vec<Rule>),
}

/// The rules in force. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: BTreeMap<String, Rule>,
}

impl Policy {
    /// The shipped defaults.
    pub fn defaults() -> Self {
        let rules = DEFAULT_RULES
            .iter()
            .map(|(name, text, _)| ((*name).to_string(), parse(text).expect("the default rules parse")))
            .collect();
        Self { rules }
    }

    /// The defaults with `path`'s rules on top (a JSON object `{"name": "rule"}`, as
    /// oslo.policy's JSON files).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut policy = Self::defaults();
        let Some(path) = path else { return Ok(policy) };
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("[api] policy_file {}: cannot read it: {error}", path.display()))?;
        policy.overlay(&text).map_err(|error| anyhow::anyhow!("[api] policy_file {}: {error}", path.display()))?;
        Ok(policy)
    }

    /// Applies rules from a JSON object; checks the result.
    pub fn overlay(&mut self, json: &str) -> Result<(), String> {
        let rules: BTreeMap<String, String> =
            serde_json::from_str(json).map_err(|error| format!("not a JSON object of rule strings: {error}"))?;
        for (name, text) in rules {
            let rule = parse(&text).map_err(|error| format!("rule {name:?} = {text:?}: {error}"))?;
            if !self.rules.contains_key(&name) && name.starts_with("cloud_manager:") {
                tracing::warn!(rule = %name, "policy file sets a rule for an action this API does not have");
            }
            self.rules.insert(name, rule);
        }
        self.check_references()
    }

    fn check_references(&self) -> Result<(), String> {
        fn walk<'a>(rule: &'a Rule, out: &mut Vec<&'a str>) {
            match rule {
                Rule::Reference(name) => out.push(name),
                Rule::Not(inner) => walk(inner, out),
                Rule::And(rules) | Rule::Or(rules) => rules.iter().for_each(|rule| walk(rule, out)),
                _ => {}
            }
        }
        for (name, rule) in &self.rules {
            let mut references = Vec::new();
            walk(rule, &mut references);
            if let Some(missing) = references.into_iter().find(|reference| !self.rules.contains_key(*reference)) {
                return Err(format!("rule {name:?} refers to rule:{missing}, which is not defined"));
            }
        }
        Ok(())
    }

    /// Whether `caller` may do `action`. An action without a rule is denied.
    pub fn allows(&self, action: &str, caller: &TokenInfo) -> bool {
        self.rules.get(action).is_some_and(|rule| self.evaluate(rule, caller, 0))
    }

    fn evaluate(&self, rule: &Rule, caller: &TokenInfo, depth: u32) -> bool {
        // A loop of rule references (a: rule:b, b: rule:a) denies rather than recursing forever.
        if depth > 32 {
            return false;
        }
        match rule {
            Rule::Always => true,
            Rule::Never => false,
            Rule::Role(role) => caller.roles.iter().any(|held| held.eq_ignore_ascii_case(role)),
            Rule::Reference(name) => self.rules.get(name).is_some_and(|rule| self.evaluate(rule, caller, depth + 1)),
            Rule::UserId(id) => &caller.user_id == id,
            Rule::ProjectId(id) => &caller.project_id == id,
            Rule::Not(inner) => !self.evaluate(inner, caller, depth + 1),
            Rule::And(rules) => rules.iter().all(|rule| self.evaluate(rule, caller, depth + 1)),
            Rule::Or(rules) => rules.iter().any(|rule| self.evaluate(rule, caller, depth + 1)),
        }
    }
}

/// The shipped `etc/aos/policy.json`: the defaults, one rule per line, in table order.
pub fn render_default_file() -> String {
    let mut text = String::from("{\n");
    for (index, (name, rule, _)) in DEFAULT_RULES.iter().enumerate() {
        let comma = if index + 1 == DEFAULT_RULES.len() { "" } else { "," };
        text.push_str(&format!("    {}: {}{comma}\n", serde_json::json!(name), serde_json::json!(rule)));
    }
    text.push_str("}\n");
    text
}

// ----- the rule language -----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Check(String),
}

fn tokenize(text: &str) -> Vec<Token> {
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    spaced
        .split_whitespace()
        .map(|word| match word {
            "(" => Token::Open,
            ")" => Token::Close,
            word if word.eq_ignore_ascii_case("and") => Token::And,
            word if word.eq_ignore_ascii_case("or") => Token::Or,
            word if word.eq_ignore_ascii_case("not") => Token::Not,
            word => Token::Check(word.to_string()),
        })
        .collect()
}

fn parse(text: &str) -> Result<Rule, String> {
    let tokens = tokenize(text);
    if tokens.is_empty() {
        return Ok(Rule::Always);
    }
    let mut position = 0;
    let rule = parse_or(&tokens, &mut position)?;
    if position != tokens.len() {
        return Err(format!("unexpected {:?} after a complete rule", tokens[position]));
    }
    Ok(rule)
}

fn parse_or(tokens: &[Token], position: &mut usize) -> Result<Rule, String> {
    let mut alternatives = vec![parse_and(tokens, position)?];
    while tokens.get(*position) == Some(&Token::Or) {
        *position += 1;
        alternatives.push(parse_and(tokens, position)?);
    }
    Ok(if alternatives.len() == 1 { alternatives.remove(0) } else { Rule::Or(alternatives) })
}

fn parse_and(tokens: &[Token], position: &mut usize) -> Result<Rule, String> {
    let mut all = vec![parse_not(tokens, position)?];
    while tokens.get(*position) == Some(&Token::And) {
        *position += 1;
        all.push(parse_not(tokens, position)?);
    }
    Ok(if all.len() == 1 { all.remove(0) } else { Rule::And(all) })
}

fn parse_not(tokens: &[Token], position: &mut usize) -> Result<Rule, String> {
    match tokens.get(*position) {
        Some(Token::Not) => {
            *position += 1;
            Ok(Rule::Not(Box::new(parse_not(tokens, position)?)))
        }
        Some(Token::Open) => {
            *position += 1;
            let inner = parse_or(tokens, position)?;
            if tokens.get(*position) != Some(&Token::Close) {
                return Err("missing ')'".into());
            }
            *position += 1;
            Ok(inner)
        }
        Some(Token::Check(check)) => {
            *position += 1;
            parse_check(check)
        }
        Some(other) => Err(format!("expected a check, found {other:?}")),
        None => Err("the rule ends where a check was expected".into()),
    }
}

fn parse_check(check: &str) -> Result<Rule, String> {
    match check {
        "@" => return Ok(Rule::Always),
        "!" => return Ok(Rule::Never),
        _ => {}
    }
    let (kind, value) =
        check.split_once(':').ok_or_else(|| format!("{check:?} is not a check (expected kind:value, @ or !)"))?;
    if value.is_empty() {
        return Err(format!("{check:?} has no value"));
    }
    match kind {
        "role" => Ok(Rule::Role(value.to_ascii_lowercase())),
        "rule" => Ok(Rule::Reference(value.to_string())),
        "user_id" => Ok(Rule::UserId(value.to_string())),
        "project_id" => Ok(Rule::ProjectId(value.to_string())),
        other => Err(format!("unknown check kind {other:?} (known: role, rule, user_id, project_id)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[&str]) -> TokenInfo {
        TokenInfo {
            user_id: "u1".into(),
            user_name: "someone".into(),
            user_domain_id: "default".into(),
            project_id: "p1".into(),
            project_name: "demo".into(),
            roles: roles.iter().map(|role| role.to_string()).collect(),
            system_scope: false,
            expires_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn by_default_readers_read_and_only_admins_act() {
        let policy = Policy::defaults();
        let reader = caller(&["reader"]);
        let admin = caller(&["admin"]);
        assert!(policy.allows("cloud_manager:node:list", &reader));
        assert!(!policy.allows("cloud_manager:node:evacuate", &reader));
        assert!(policy.allows("cloud_manager:node:evacuate", &admin));
        assert!(!policy.allows("cloud_manager:node:list", &caller(&[])));
        assert!(!policy.allows("cloud_manager:no_such_action", &admin), "an action without a rule is denied");
    }

    #[test]
    fn the_rule_language_has_and_or_not_parentheses_and_constants() {
        let mut policy = Policy::defaults();
        policy
            .overlay(
                r#"{"x": "(role:a or role:b) and not role:c", "always": "", "at": "@", "never": "!",
                    "mine": "project_id:p1 and user_id:u1", "upper": "role:ADMIN"}"#,
            )
            .unwrap();
        assert!(policy.allows("x", &caller(&["a"])));
        assert!(!policy.allows("x", &caller(&["a", "c"])));
        assert!(!policy.allows("x", &caller(&["d"])));
        assert!(policy.allows("always", &caller(&[])) && policy.allows("at", &caller(&[])));
        assert!(!policy.allows("never", &caller(&["admin"])));
        assert!(policy.allows("mine", &caller(&[])));
        assert!(policy.allows("upper", &caller(&["admin"])));
    }

    #[test]
    fn a_file_can_open_an_action_to_readers() {
        let mut policy = Policy::defaults();
        policy.overlay(r#"{"cloud_manager:node:maintenance": "rule:reader_api"}"#).unwrap();
        assert!(policy.allows("cloud_manager:node:maintenance", &caller(&["reader"])));
    }

    #[test]
    fn bad_rules_are_rejected_naming_the_rule() {
        let mut policy = Policy::defaults();
        let error = policy.overlay(r#"{"cloud_manager:node:list": "role:admin or"}"#).unwrap_err();
        assert!(error.contains("cloud_manager:node:list"), "{error}");
        let error = policy.overlay(r#"{"a": "rule:nowhere"}"#).unwrap_err();
        assert!(error.contains("rule:nowhere"), "{error}");
        let error = policy.overlay(r#"{"a": "tenant:x"}"#).unwrap_err();
        assert!(error.contains("unknown check kind"), "{error}");
        assert!(policy.overlay("[1]").is_err());
        assert!(policy.overlay(r#"{"a": "(role:x"}"#).unwrap_err().contains("')'"));
    }

    #[test]
    fn a_loop_of_references_denies_instead_of_hanging() {
        let mut policy = Policy::defaults();
        policy.overlay(r#"{"a": "rule:b", "b": "rule:a"}"#).unwrap();
        assert!(!policy.allows("a", &caller(&["admin"])));
    }

    #[test]
    fn the_shipped_policy_file_is_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/aos/policy.json");
        if std::env::var_os("AOS_REGENERATE_EXAMPLES").is_some() {
            std::fs::write(path, render_default_file()).unwrap();
        }
        let shipped = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            shipped,
            render_default_file(),
            "etc/aos/policy.json is not the defaults: run AOS_REGENERATE_EXAMPLES=1 cargo test -p aos-api"
        );
        let mut policy = Policy::defaults();
        policy.overlay(&shipped).unwrap();
    }
}
