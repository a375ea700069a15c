//! `GET /v1/settings`: the effective configuration of this API process — every known option
//! (`aos_config::definitions::OPTIONS`, in table order) with its value and where the value
//! comes from: the built-in default or the last file that set it (there is no environment
//! layer). Secrets are masked by `aos-config` itself (`***`; only the password of a URL),
//! the same view `aos-cloud-manager config show` prints.

use axum::Extension;
use axum::extract::State;
use axum::response::Json;
use serde::Serialize;

use crate::error::{ApiError, ErrorBody};
use crate::{AppState, Caller};

/// One option's effective value.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Setting)]
pub(crate) struct SettingView {
    pub section: &'static str,
    pub key: &'static str,
    /// As configured or defaulted, secrets masked (`***`, or a URL with `***` as password).
    pub value: String,
    /// `default` or `file`.
    #[schema(example = "file")]
    pub source: &'static str,
    /// The file that set it (`source` = `file`).
    pub file: Option<String>,
    /// Whether the option is a secret (its value is masked).
    pub secret: bool,
}

/// What the process was configured with: the effective options and the files read.
#[derive(Debug, Clone, Default)]
pub struct EffectiveSettings {
    pub options: Vec<aos_config::EffectiveOption>,
    pub files_read: Vec<std::path::PathBuf>,
}

impl EffectiveSettings {
    pub fn from_loaded(loaded: &aos_config::Loaded) -> Self {
        Self { options: loaded.effective_options(), files_read: loaded.files_read().to_vec() }
    }
}

pub(crate) fn views(settings: &EffectiveSettings) -> Vec<SettingView> {
    settings
        .options
        .iter()
        .map(|option| {
            let secret = aos_config::definitions::OPTIONS
                .iter()
                .any(|def| def.section == option.section && def.key == option.key && def.secret);
            let (source, file) = match &option.source {
                aos_config::OptionSource::Default => ("default", None),
                aos_config::OptionSource::File(path) => ("file", Some(path.display().to_string())),
            };
            SettingView { section: option.section, key: option.key, value: option.value.clone(), source, file, secret }
        })
        .collect()
}

#[utoipa::path(
    get,
    path = "/v1/settings",
    tag = "settings",
    description = "The effective configuration of the API process: every option with its value (secrets masked) and its source (default or the file that set it).",
    responses(
        (status = 200, description = "{\"settings\": [Setting], \"files_read\": [path]}", body = Object),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 503, description = "The process was started without its configuration's provenance", body = ErrorBody),
    )
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:settings:show")?;
    let Some(settings) = state.inner().settings.as_deref() else {
        return Err(ApiError::ServiceUnavailable(
            "this process was started without its configuration's provenance (in-process API); \
             aos-cloud-manager-api serves GET /v1/settings"
                .into(),
        ));
    };
    let files: Vec<String> = settings.files_read.iter().map(|path| path.display().to_string()).collect();
    Ok(Json(serde_json::json!({ "settings": views(settings), "files_read": files })))
}
