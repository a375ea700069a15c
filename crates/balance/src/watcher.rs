//! OpenStack Watcher as a DRS source (`[drs] host/port/username/password`;
//! docs/adr/0015-drs.md).
//!
//! One audit is: a token from Keystone for the `[drs]` user (through
//! `aos_openstack::IdentityClient`, the project and domains of `[keystone_authtoken]`);
//! `POST /v1/audits` (ONESHOT, the goal and strategy asked, `auto_trigger` false: we apply
//! plans ourselves); `GET /v1/audits/{uuid}` until SUCCEEDED (or FAILED/CANCELLED/SUSPENDED,
//! or a timeout); `GET /v1/action_plans/detail?audit_uuid=` for its plan and
//! `GET /v1/actions/detail?action_plan_uuid=` for the actions. The `/detail` forms are used
//! because Watcher's plain lists leave `input_parameters` out. A `migrate` action with
//! `migration_type` live becomes one of our live-migration actions (`resource_id` → server,
//! `source_node` → source, `destination_node` → target); every other action (cold
//! migrations, resizes, nop, sleep, state changes, live migrations without a destination) is
//! listed in the plan's summary as ignored, with the reason, and not applied.
//!
//! With a scope (an aggregate), the actions whose source or target is not a host of the
//! aggregate are ignored likewise: Watcher's audit scope comes from audit templates, which we
//! do not manage.

use std::time::{Duration, Instant};

use aos_db::{NewDrsAction, NewDrsPlan};
use aos_openstack::{AuthSettings, ClientOptions, IdentityClient, OpenStackClient};
use serde_json::{Map, Value, json};

use crate::drs::{BoxFuture, LIVE_MIGRATE_ACTION, Recommendation, Recommender};

/// How to reach Watcher and what to ask it.
#[derive(Debug, Clone)]
pub struct WatcherSettings {
    /// `http://<[drs] host>:<[drs] port>` (Watcher's API root; `/v1/...` is appended).
    pub endpoint: url::Url,
    /// Keystone credentials: `[drs]` username/password, the rest from `[keystone_authtoken]`.
    pub auth: AuthSettings,
    /// Watcher's goal (e.g. `workload_balancing`, `server_consolidation`, `cluster_maintaining`).
    pub goal: String,
    /// Watcher's strategy; `None` lets Watcher choose one for the goal.
    pub strategy: Option<String>,
    pub parameters: Map<String, Value>,
    pub poll_interval: Duration,
    /// How long an audit may stay PENDING/ONGOING.
    pub timeout: Duration,
}

/// The goal asked when none is given.
pub const DEFAULT_GOAL: &str = "workload_balancing";

impl WatcherSettings {
    /// From a validated configuration; `None` when `[drs] host` is empty (no DRS system).
    pub fn from_config(config: &aos_config::Config) -> Option<Result<Self, String>> {
        let drs = &config.drs;
        if drs.host.is_empty() {
            return None;
        }
        let host = if drs.host.contains(':') && !drs.host.starts_with('[') {
            format!("[{}]", drs.host)
        } else {
            drs.host.clone()
        };
        let endpoint = match format!("http://{host}:{}/", drs.port).parse::<url::Url>() {
            Ok(url) => url,
            Err(error) => return Some(Err(format!("[drs] host {:?} / port {}: {error}", drs.host, drs.port))),
        };
        let mut auth = AuthSettings::from(&config.keystone_authtoken);
        auth.username = drs.username.clone();
        auth.password = drs.password.clone();
        Some(Ok(Self {
            endpoint,
            auth,
            goal: DEFAULT_GOAL.into(),
            strategy: None,
            parameters: Map::new(),
            poll_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(600),
        }))
    }
}

/// Watcher behind [`Recommender`].
pub struct WatcherRecommender {
    settings: WatcherSettings,
    http: reqwest::Client,
    identity: IdentityClient,
    /// For the hosts of an aggregate when an audit has a scope.
    cloud: Option<OpenStackClient>,
}

impl WatcherRecommender {
    pub fn new(settings: WatcherSettings, cloud: Option<OpenStackClient>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aos-cloud-manager/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        let identity =
            IdentityClient::new(settings.auth.clone(), ClientOptions::default()).map_err(|error| error.to_string())?;
        Ok(Self { settings, http, identity, cloud })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.settings.endpoint.as_str().trim_end_matches('/'), path)
    }

    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let call = format!("watcher {method} {path}");
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("X-Auth-Token", token)
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|error| format!("{call}: {}", error_chain(&error)))?;
        let status = response.status();
        let text = response.text().await.map_err(|error| format!("{call}: {error}"))?;
        if !status.is_success() {
            let text: String = text.chars().take(500).collect();
            return Err(format!("{call}: HTTP {}: {text}", status.as_u16()));
        }
        serde_json::from_str(&text).map_err(|error| format!("{call}: the answer is not JSON: {error}"))
    }

    async fn audit(&self, scope: Option<&str>) -> Result<Recommendation, String> {
        let issued = self
            .identity
            .issue_token(&self.settings.auth)
            .await
            .map_err(|error| format!("Keystone refused the [drs] credentials: {error}"))?;
        let token = issued.token.expose().clone();
        let mut body = json!({
            "audit_type": "ONESHOT",
            "goal": self.settings.goal,
            "auto_trigger": false,
            "name": format!("aos-cloud-manager-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")),
        });
        if let Some(strategy) = &self.settings.strategy {
            body["strategy"] = json!(strategy);
        }
        if !self.settings.parameters.is_empty() {
            body["parameters"] = Value::Object(self.settings.parameters.clone());
        }
        let created = self.call(&token, reqwest::Method::POST, "/v1/audits", Some(body)).await?;
        let audit_uuid = text(&created, "uuid").ok_or("watcher POST /v1/audits: no uuid in the answer")?;
        let started = Instant::now();
        loop {
            let audit = self.call(&token, reqwest::Method::GET, &format!("/v1/audits/{audit_uuid}"), None).await?;
            match text(&audit, "state").as_deref() {
                Some("SUCCEEDED") => break,
                Some(state @ ("FAILED" | "CANCELLED" | "SUSPENDED" | "DELETED")) => {
                    return Err(format!("Watcher audit {audit_uuid} is {state}"));
                }
                _ if started.elapsed() > self.settings.timeout => {
                    return Err(format!(
                        "Watcher audit {audit_uuid} still {} after {:?}",
                        text(&audit, "state").unwrap_or_default(),
                        self.settings.timeout
                    ));
                }
                _ => tokio::time::sleep(self.settings.poll_interval).await,
            }
        }
        let plans = self
            .call(&token, reqwest::Method::GET, &format!("/v1/action_plans/detail?audit_uuid={audit_uuid}"), None)
            .await?;
        let plans = plans.get("action_plans").and_then(Value::as_array).cloned().unwrap_or_default();
        let Some(plan) = plans
            .iter()
            .filter(|plan| text(plan, "state").as_deref() == Some("RECOMMENDED"))
            .max_by_key(|plan| text(plan, "created_at").unwrap_or_default())
        else {
            return Ok(Recommendation { audit_external_id: Some(audit_uuid), plan: None });
        };
        let plan_uuid = text(plan, "uuid").ok_or("a Watcher action plan without uuid")?;
        let actions = self
            .call(&token, reqwest::Method::GET, &format!("/v1/actions/detail?action_plan_uuid={plan_uuid}"), None)
            .await?;
        let actions = actions.get("actions").and_then(Value::as_array).cloned().unwrap_or_default();
        let hosts = match (scope, &self.cloud) {
            (Some(aggregate), Some(cloud)) => {
                let aggregates = cloud.aggregates().await.map_err(|error| error.to_string())?;
                let found = aggregates
                    .into_iter()
                    .find(|a| a.name == aggregate || a.id.to_string() == aggregate)
                    .ok_or_else(|| format!("no host aggregate named (or with id) {aggregate:?}"))?;
                Some(found.hosts)
            }
            _ => None,
        };
        let (ours, ignored) = map_actions(&actions, hosts.as_deref());
        let summary = json!({
            "watcher_audit": audit_uuid,
            "watcher_action_plan": plan_uuid,
            "goal": self.settings.goal,
            "strategy": plan.get("strategy_name").cloned().or_else(|| self.settings.strategy.clone().map(Value::from)),
            "efficacy_indicators": plan.get("efficacy_indicators").cloned().unwrap_or(Value::Null),
            "ignored": ignored,
        });
        let plan = NewDrsPlan { external_id: Some(plan_uuid), summary: Some(summary), actions: ours };
        Ok(Recommendation { audit_external_id: Some(audit_uuid), plan: Some(plan) })
    }
}

impl Recommender for WatcherRecommender {
    fn source(&self) -> &'static str {
        "watcher"
    }

    fn parameters(&self) -> Option<Value> {
        Some(json!({
            "endpoint": self.settings.endpoint.as_str(),
            "goal": self.settings.goal,
            "strategy": self.settings.strategy,
            "parameters": self.settings.parameters,
        }))
    }

    fn recommend<'a>(&'a self, scope: Option<&'a str>) -> BoxFuture<'a, Result<Recommendation, String>> {
        Box::pin(self.audit(scope))
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Watcher's actions → ours, and the ignored ones with the reason (see the module header).
/// `hosts`: the scope's hosts, when the audit has one.
pub fn map_actions(actions: &[Value], hosts: Option<&[String]>) -> (Vec<NewDrsAction>, Vec<Value>) {
    let mut ours = Vec::new();
    let mut ignored = Vec::new();
    for action in actions {
        let uuid = text(action, "uuid");
        let kind = text(action, "action_type").unwrap_or_default();
        let mut ignore = |reason: String| ignored.push(json!({ "uuid": uuid, "action_type": kind, "reason": reason }));
        if kind != "migrate" {
            ignore(format!("{kind} actions are not applied by aos-cloud-manager"));
            continue;
        }
        let empty = Value::Object(Map::new());
        let parameters = action.get("input_parameters").unwrap_or(&empty);
        let migration_type = text(parameters, "migration_type").unwrap_or_default();
        if migration_type != "live" {
            ignore(format!("migration_type {migration_type:?}: only live migrations are applied"));
            continue;
        }
        let Some(server_id) = text(parameters, "resource_id") else {
            ignore("no resource_id".into());
            continue;
        };
        let (Some(source), Some(target)) = (text(parameters, "source_node"), text(parameters, "destination_node"))
        else {
            ignore(format!("live migration of {server_id} without source_node and destination_node"));
            continue;
        };
        if let Some(hosts) = hosts
            && !(hosts.contains(&source) && hosts.contains(&target))
        {
            ignore(format!("{source} → {target} leaves the audited aggregate"));
            continue;
        }
        ours.push(NewDrsAction {
            kind: LIVE_MIGRATE_ACTION.into(),
            server_name: text(parameters, "resource_name").unwrap_or_else(|| server_id.clone()),
            server_id,
            source_host: Some(source),
            target_host: Some(target),
            ram_mb: 0,
            vcpus: 0,
            external_id: text(action, "uuid"),
        });
    }
    (ours, ignored)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped after Watcher's api-ref samples of `GET /v1/actions/detail`.
    fn actions() -> Vec<Value> {
        serde_json::from_value(json!([
            { "uuid": "a1", "action_type": "migrate", "state": "PENDING",
              "input_parameters": { "migration_type": "live", "source_node": "h1", "destination_node": "h2",
                                    "resource_id": "s1", "resource_name": "vm-1" } },
            { "uuid": "a2", "action_type": "migrate", "state": "PENDING",
              "input_parameters": { "migration_type": "cold", "source_node": "h1", "destination_node": "h2",
                                    "resource_id": "s2" } },
            { "uuid": "a3", "action_type": "nop", "state": "PENDING", "input_parameters": { "message": "hi" } },
            { "uuid": "a4", "action_type": "migrate", "state": "PENDING",
              "input_parameters": { "migration_type": "live", "source_node": "h1", "resource_id": "s4" } },
            { "uuid": "a5", "action_type": "migrate", "state": "PENDING",
              "input_parameters": { "migration_type": "live", "source_node": "h1", "destination_node": "h9",
                                    "resource_id": "s5" } }
        ]))
        .unwrap()
    }

    #[test]
    fn live_migrate_actions_become_ours_and_the_rest_is_ignored_with_the_reason() {
        let (ours, ignored) = map_actions(&actions(), None);
        let servers: Vec<(&str, &str, Option<&str>)> =
            ours.iter().map(|a| (a.server_id.as_str(), a.server_name.as_str(), a.target_host.as_deref())).collect();
        assert_eq!(servers, [("s1", "vm-1", Some("h2")), ("s5", "s5", Some("h9"))]);
        assert_eq!(ours[0].external_id.as_deref(), Some("a1"));
        let reasons: Vec<&str> = ignored.iter().map(|i| i["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons.len(), 3);
        assert!(reasons[0].contains("cold"), "{reasons:?}");
        assert!(reasons[1].contains("nop actions are not applied"), "{reasons:?}");
        assert!(reasons[2].contains("without source_node and destination_node"), "{reasons:?}");
    }

    #[test]
    fn with_a_scope_moves_leaving_the_aggregate_are_ignored() {
        let hosts = ["h1".to_owned(), "h2".to_owned()];
        let (ours, ignored) = map_actions(&actions(), Some(&hosts));
        assert_eq!(ours.len(), 1);
        assert!(ignored.iter().any(|i| i["reason"].as_str().unwrap().contains("h1 → h9 leaves the audited aggregate")));
    }
}
