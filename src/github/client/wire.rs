//! GitHub's JSON, as far as the client reads or writes it.

use crate::github::Installation;
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;

#[derive(Deserialize)]
pub(super) struct AccountJson {
    pub(super) login: String,
    pub(super) id: i64,
    #[serde(rename = "type", default)]
    pub(super) account_type: String,
}

#[derive(Deserialize)]
pub(super) struct InstallationJson {
    pub(super) id: i64,
    pub(super) account: AccountJson,
    #[serde(default)]
    pub(super) permissions: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) repository_selection: String,
    #[serde(default)]
    pub(super) suspended_at: Option<String>,
}

impl From<InstallationJson> for Installation {
    fn from(json: InstallationJson) -> Self {
        Self {
            id: json.id,
            account_login: json.account.login,
            account_id: json.account.id,
            account_type: json.account.account_type,
            repository_selection: json.repository_selection,
            permissions: json.permissions,
            suspended: json.suspended_at.is_some(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RepositoryJson {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) full_name: String,
}

#[derive(Deserialize)]
pub(super) struct RepositoryListJson {
    pub(super) repositories: Vec<RepositoryJson>,
}

#[derive(serde::Serialize)]
pub(super) struct TokenRequestJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) repositories: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) permissions: Option<&'a BTreeMap<String, String>>,
}

#[derive(Deserialize)]
pub(super) struct TokenRepositoryJson {
    pub(super) full_name: String,
}

#[derive(Deserialize)]
pub(super) struct TokenJson {
    pub(super) token: SecretString,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) expires_at: OffsetDateTime,
    #[serde(default)]
    pub(super) permissions: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) repository_selection: String,
    #[serde(default)]
    pub(super) repositories: Option<Vec<TokenRepositoryJson>>,
}
