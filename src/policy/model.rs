//! The policy document as written by an admin, and its validation.
//!
//! The source is parsed into a `serde_json::Value` first and then walked by hand, so that every
//! problem is reported with its path in one go (serde alone stops at the first).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use url::Url;

use super::matcher::{compile_glob, compile_pattern, has_glob, is_login_claim};
use super::permissions::{self, PermissionSet};
use super::{PolicyFormat, GITHUB_ACTIONS_ISSUER};

/// Largest policy source accepted, in bytes. Real policies are a few KiB; the cap bounds the
/// parse and compile work an admin request can cause.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Most rules in one policy. Every mint evaluates every rule, so the count bounds request cost.
pub const MAX_RULES: usize = 100;

/// Most globs and regexes in one policy. Each may compile to up to
/// [`REGEX_SIZE_LIMIT`](super::REGEX_SIZE_LIMIT) bytes, so this bounds the memory one
/// compiled policy can hold.
pub const MAX_COMPILED_MATCHERS: usize = 500;

/// Longest rule name. Names go into denial reasons, logs and audit events.
pub const MAX_RULE_NAME_LEN: usize = 128;

/// Claims any one of which, with a literal owner, ties a rule to one GitHub account.
const OWNER_CLAIMS: &[&str] = &["repository_owner_id", "repository_owner", "repository"];

/// A whole policy, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDocument {
    /// Free text for humans.
    pub description: Option<String>,
    /// The rules, in the order written.
    pub rules: Vec<RuleDocument>,
}

/// One rule, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDocument {
    /// Unique within the policy.
    pub name: String,
    /// The OIDC issuer the caller must come from (default [`GITHUB_ACTIONS_ISSUER`]).
    pub issuer: String,
    /// `match`: claim → accepted values (one value written alone becomes a list of one).
    pub match_claims: BTreeMap<String, Vec<MatchValue>>,
    /// `match_patterns`: claim → regex, as written (anchored when compiled).
    pub match_patterns: BTreeMap<String, String>,
    /// `grant.repositories`.
    pub repositories: Vec<RepoPattern>,
    /// `grant.permissions`, or `{contents: read}` when absent.
    pub permissions: PermissionSet,
}

/// One value of a `match` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchValue {
    /// Exact, or a glob if it holds `*` or `?`.
    String(String),
    /// Matches the claim `true`/`false`.
    Bool(bool),
}

/// One `owner/name` entry of `grant.repositories`; the name may be a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    /// Owner login, literal.
    pub owner: String,
    /// Repository name or name glob (`*` is the whole installation).
    pub name: String,
}

impl PolicyDocument {
    /// Parse and validate. Every problem is reported, each prefixed with its path
    /// (`rules[1].grant.permissions.contents: ...`).
    pub fn parse(source: &str, format: PolicyFormat) -> Result<Self, Vec<String>> {
        if source.len() > MAX_POLICY_BYTES {
            return Err(vec![format!(
                "policy: {} bytes exceeds the limit of {MAX_POLICY_BYTES} bytes",
                source.len()
            )]);
        }
        let parsed = match format {
            PolicyFormat::Json => serde_json::from_str::<StrictValue>(source)
                .map_err(|e| format!("policy: not valid JSON: {e}")),
            PolicyFormat::Yaml => serde_norway::from_str::<StrictValue>(source)
                .map_err(|e| format!("policy: not valid YAML: {e}")),
        };
        let value = parsed.map_err(|e| vec![e])?.0;
        let mut walker = Walker::default();
        let doc = walker.policy(&value);
        if walker.errors.is_empty() {
            Ok(doc)
        } else {
            Err(walker.errors)
        }
    }
}

/// A `serde_json::Value` that refuses duplicate map keys. Both serde_json and serde_norway
/// would otherwise keep the last one silently, so a reviewer reading the first `ref:` of a
/// rule would not see what is enforced.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map, list, string, bool, number or null")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // NaN and infinities have no JSON form; they are invalid wherever they appear anyway.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(d).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Walks a parsed policy, collecting every error.
#[derive(Default)]
struct Walker {
    errors: Vec<String>,
    compiled_matchers: usize,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// How a JSON value is called in messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

impl Walker {
    fn err(&mut self, path: &str, msg: impl fmt::Display) {
        self.errors.push(format!("{path}: {msg}"));
    }

    fn unknown_keys(&mut self, path: &str, obj: &Map<String, Value>, allowed: &[&str]) {
        for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.err(
                &join(path, key),
                format!("unknown key (expected one of {})", allowed.join(", ")),
            );
        }
    }

    fn policy(&mut self, value: &Value) -> PolicyDocument {
        let Some(obj) = value.as_object() else {
            self.err(
                "policy",
                format!(
                    "must be a map with rules and an optional description, not {}",
                    kind(value)
                ),
            );
            return PolicyDocument::default();
        };
        self.unknown_keys("", obj, &["description", "rules"]);
        let description = match obj.get("description") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(
                    "description",
                    format!("must be a string, not {}", kind(other)),
                );
                None
            }
        };
        let mut rules = Vec::new();
        match obj.get("rules") {
            None => self.err("rules", "required: a non-empty list of rules"),
            Some(Value::Array(items)) if items.is_empty() => {
                self.err(
                    "rules",
                    "must not be empty: a policy without rules grants nothing",
                );
            }
            Some(Value::Array(items)) => {
                if items.len() > MAX_RULES {
                    self.err(
                        "rules",
                        format!("{} rules exceed the limit of {MAX_RULES}", items.len()),
                    );
                }
                let mut seen: HashMap<String, usize> = HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    let Some(rule) = self.rule(i, item) else {
                        continue;
                    };
                    if rule.name.is_empty() {
                        continue;
                    }
                    if let Some(first) = seen.get(&rule.name) {
                        self.err(
                            &format!("rules[{i}].name"),
                            format!("{:?} is already the name of rules[{first}]", rule.name),
                        );
                    } else {
                        seen.insert(rule.name.clone(), i);
                    }
                    rules.push(rule);
                }
            }
            Some(other) => self.err(
                "rules",
                format!("must be a list of rules, not {}", kind(other)),
            ),
        }
        if self.compiled_matchers > MAX_COMPILED_MATCHERS {
            self.err(
                "policy",
                format!(
                    "{} globs and regexes exceed the limit of {MAX_COMPILED_MATCHERS}",
                    self.compiled_matchers
                ),
            );
        }
        PolicyDocument { description, rules }
    }

    fn rule(&mut self, i: usize, value: &Value) -> Option<RuleDocument> {
        let path = format!("rules[{i}]");
        let Some(obj) = value.as_object() else {
            self.err(
                &path,
                format!(
                    "must be a map with name, match and grant, not {}",
                    kind(value)
                ),
            );
            return None;
        };
        self.unknown_keys(
            &path,
            obj,
            &["name", "issuer", "match", "match_patterns", "grant"],
        );
        let mut rule = RuleDocument {
            name: self
                .rule_name(&join(&path, "name"), obj.get("name"))
                .unwrap_or_default(),
            issuer: GITHUB_ACTIONS_ISSUER.to_owned(),
            ..RuleDocument::default()
        };
        if let Some(v) = obj.get("issuer") {
            let p = join(&path, "issuer");
            match v {
                Value::String(s) => match check_issuer(s) {
                    Ok(()) => rule.issuer.clone_from(s),
                    Err(e) => self.err(&p, e),
                },
                other => self.err(&p, format!("must be a URL string, not {}", kind(other))),
            }
        }
        self.match_claims(&join(&path, "match"), obj.get("match"), &mut rule);
        self.match_patterns(
            &join(&path, "match_patterns"),
            obj.get("match_patterns"),
            &mut rule,
        );
        self.grant(&join(&path, "grant"), obj.get("grant"), &mut rule);
        Some(rule)
    }

    fn rule_name(&mut self, path: &str, value: Option<&Value>) -> Option<String> {
        let msg = match value {
            None => "required: a name unique in the policy".to_owned(),
            Some(Value::String(s)) if s.trim().is_empty() => "must not be empty".to_owned(),
            Some(Value::String(s)) if s.chars().count() > MAX_RULE_NAME_LEN => {
                format!("longer than {MAX_RULE_NAME_LEN} characters")
            }
            // Names end up in log lines and audit events: no line breaks or escapes there.
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                "must not contain control characters".to_owned()
            }
            Some(Value::String(s)) => return Some(s.clone()),
            Some(other) => format!("must be a string, not {}", kind(other)),
        };
        self.err(path, msg);
        None
    }

    fn match_claims(&mut self, path: &str, value: Option<&Value>, rule: &mut RuleDocument) {
        let obj = match value {
            None => {
                self.err(
                    path,
                    "required: a map of claim to value that binds the caller's owner",
                );
                return;
            }
            Some(Value::Object(obj)) if obj.is_empty() => {
                self.err(
                    path,
                    "must not be empty: a rule must bind the caller's owner",
                );
                return;
            }
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                self.err(
                    path,
                    format!("must be a map of claim to value, not {}", kind(other)),
                );
                return;
            }
        };
        // An owner claim that is present but invalid already has its own error; do not pile
        // a misleading "does not bind the owner" on top.
        let mut owner_claim_invalid = false;
        for (claim, v) in obj {
            let p = join(path, claim);
            if claim.is_empty() {
                self.err(&p, "claim name must not be empty");
                continue;
            }
            let before = self.errors.len();
            let values = self.match_values(&p, claim, v);
            if self.errors.len() > before {
                owner_claim_invalid |= OWNER_CLAIMS.contains(&claim.as_str());
                continue;
            }
            rule.match_claims.insert(claim.clone(), values);
        }
        let bound = rule
            .match_claims
            .iter()
            .any(|(claim, values)| binds_owner(claim, values));
        if !bound && !owner_claim_invalid {
            self.err(
                path,
                "does not bind the caller's owner: add repository_owner_id, repository_owner or \
                 repository with a literal owner (no * or ? in the owner part); GitHub's OIDC \
                 issuer is shared by every repository on GitHub, so without it any repository \
                 could use this rule",
            );
        }
    }

    fn match_values(&mut self, path: &str, claim: &str, value: &Value) -> Vec<MatchValue> {
        match value {
            Value::String(s) => self.match_string(path, claim, s).into_iter().collect(),
            Value::Bool(b) => vec![MatchValue::Bool(*b)],
            Value::Array(items) if items.is_empty() => {
                self.err(path, "must not be an empty list: it would match nothing");
                Vec::new()
            }
            Value::Array(items) => {
                let mut out = Vec::new();
                for (j, item) in items.iter().enumerate() {
                    let p = format!("{path}[{j}]");
                    match item {
                        Value::String(s) => out.extend(self.match_string(&p, claim, s)),
                        Value::Bool(b) => out.push(MatchValue::Bool(*b)),
                        other => self.err(&p, not_a_match_value(other)),
                    }
                }
                out
            }
            other => {
                self.err(path, not_a_match_value(other));
                Vec::new()
            }
        }
    }

    fn match_string(&mut self, path: &str, claim: &str, s: &str) -> Option<MatchValue> {
        if s.is_empty() {
            self.err(path, "must not be an empty string");
            return None;
        }
        if claim == "repository" && !s.contains('/') {
            self.err(
                path,
                format!("{s:?} is not owner/name: the repository claim always is"),
            );
            return None;
        }
        if has_glob(s) {
            self.compiled_matchers += 1;
            if let Err(e) = compile_glob(s, is_login_claim(claim)) {
                self.err(path, e);
                return None;
            }
        }
        Some(MatchValue::String(s.to_owned()))
    }

    fn match_patterns(&mut self, path: &str, value: Option<&Value>, rule: &mut RuleDocument) {
        let obj = match value {
            None => return,
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                self.err(
                    path,
                    format!("must be a map of claim to regex, not {}", kind(other)),
                );
                return;
            }
        };
        for (claim, v) in obj {
            let p = join(path, claim);
            if claim.is_empty() {
                self.err(&p, "claim name must not be empty");
                continue;
            }
            let Value::String(pattern) = v else {
                self.err(&p, format!("must be a regex string, not {}", kind(v)));
                continue;
            };
            if pattern.is_empty() {
                self.err(&p, "must not be an empty regex");
                continue;
            }
            self.compiled_matchers += 1;
            match compile_pattern(pattern, is_login_claim(claim)) {
                Ok(_) => {
                    rule.match_patterns.insert(claim.clone(), pattern.clone());
                }
                Err(e) => self.err(&p, e),
            }
        }
    }

    fn grant(&mut self, path: &str, value: Option<&Value>, rule: &mut RuleDocument) {
        let obj = match value {
            None => {
                self.err(
                    path,
                    "required: a map with repositories and optional permissions",
                );
                return;
            }
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                self.err(
                    path,
                    format!(
                        "must be a map with repositories and permissions, not {}",
                        kind(other)
                    ),
                );
                return;
            }
        };
        self.unknown_keys(path, obj, &["repositories", "permissions"]);

        let p = join(path, "repositories");
        match obj.get("repositories") {
            None => self.err(&p, "required: a non-empty list of owner/name"),
            Some(Value::Array(items)) if items.is_empty() => {
                self.err(
                    &p,
                    "must not be empty: a grant of no repository grants nothing",
                );
            }
            Some(Value::Array(items)) => {
                for (j, item) in items.iter().enumerate() {
                    let ip = format!("{p}[{j}]");
                    let Value::String(s) = item else {
                        self.err(
                            &ip,
                            format!("must be an owner/name string, not {}", kind(item)),
                        );
                        continue;
                    };
                    match parse_repo_pattern(s) {
                        Ok(r) => rule.repositories.push(r),
                        Err(e) => self.err(&ip, e),
                    }
                }
            }
            Some(other) => self.err(
                &p,
                format!("must be a list of owner/name, not {}", kind(other)),
            ),
        }

        let p = join(path, "permissions");
        rule.permissions = match obj.get("permissions") {
            None => PermissionSet::default_grant(),
            Some(Value::Object(perms)) if perms.is_empty() => {
                self.err(
                    &p,
                    "must not be empty: GitHub reads an empty permission set as every permission \
                     of the installation; leave permissions out for {contents: read}",
                );
                PermissionSet::default()
            }
            Some(Value::Object(perms)) => {
                let mut set = PermissionSet::default();
                for (key, level) in perms {
                    let kp = join(&p, key);
                    let Value::String(level) = level else {
                        self.err(
                            &kp,
                            format!(
                                "must be a level string (read, write or admin), not {}",
                                kind(level)
                            ),
                        );
                        continue;
                    };
                    match permissions::check(key, level) {
                        Ok((lvl, _)) => {
                            set.0.insert(key.clone(), lvl);
                        }
                        Err(e) => self.err(&kp, e),
                    }
                }
                set
            }
            Some(other) => {
                self.err(
                    &p,
                    format!("must be a map of permission to level, not {}", kind(other)),
                );
                PermissionSet::default()
            }
        };
    }
}

fn not_a_match_value(v: &Value) -> String {
    let hint = if v.is_number() {
        " (quote numbers: GitHub sends every claim as a string, e.g. \"1001\")"
    } else {
        ""
    };
    format!(
        "must be a string, a bool or a list of them, not {}{hint}",
        kind(v)
    )
}

/// Does this `match` entry tie the rule to one owner? Every alternative must, or one of them
/// would let another owner in.
fn binds_owner(claim: &str, values: &[MatchValue]) -> bool {
    !values.is_empty()
        && values.iter().all(|v| match (claim, v) {
            (_, MatchValue::Bool(_)) => false,
            ("repository_owner_id" | "repository_owner", MatchValue::String(s)) => {
                !s.is_empty() && !has_glob(s)
            }
            ("repository", MatchValue::String(s)) => s
                .split_once('/')
                .is_some_and(|(owner, _)| !owner.is_empty() && !has_glob(owner)),
            _ => false,
        })
}

/// Claims holding immutable numeric ids, which survive renames and cannot be re-registered.
const ID_CLAIMS: &[&str] = &["repository_owner_id", "repository_id"];

/// Does the rule pin the caller by an immutable id, not only by a login?
pub(crate) fn binds_an_id(rule: &RuleDocument) -> bool {
    ID_CLAIMS.iter().any(|claim| {
        rule.match_claims.get(*claim).is_some_and(|values| {
            !values.is_empty()
                && values
                    .iter()
                    .all(|v| matches!(v, MatchValue::String(s) if !has_glob(s)))
        })
    })
}

/// `https`, or `http` for a loopback host, mirroring the `allow_http` exception for OIDC
/// issuers: the built-in simulator and tests run plain-HTTP issuers on loopback.
fn check_issuer(s: &str) -> Result<(), String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if crate::config::is_loopback_url(&url) => {}
        _ => return Err("must be an https URL (http only for a loopback host)".to_owned()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".to_owned());
    }
    Ok(())
}

/// GitHub login rules: 1–39 ASCII letters, digits or `-`.
pub(crate) fn valid_owner(owner: &str) -> bool {
    (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// GitHub repository name rules: 1–100 ASCII letters, digits, `.`, `_` or `-`, not `.`/`..`.
pub(crate) fn valid_repo_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

fn parse_repo_pattern(s: &str) -> Result<RepoPattern, String> {
    let Some((owner, name)) = s.split_once('/') else {
        return Err(format!("{s:?} is not owner/name"));
    };
    if name.contains('/') {
        return Err(format!("{s:?} is not owner/name: more than one /"));
    }
    if has_glob(owner) {
        return Err(format!(
            "owner {owner:?} must be literal: a grant names the installation it reaches, so \
             only the repository name may be a glob"
        ));
    }
    if !valid_owner(owner) {
        return Err(format!("owner {owner:?} is not a GitHub login"));
    }
    // Check the name with its wildcards replaced by a valid character.
    let plain = name.replace(['*', '?'], "x");
    if !valid_repo_name(&plain) || name == "." || name == ".." {
        return Err(format!(
            "name {name:?} is not a GitHub repository name or name glob"
        ));
    }
    Ok(RepoPattern {
        owner: owner.to_owned(),
        name: name.to_owned(),
    })
}
