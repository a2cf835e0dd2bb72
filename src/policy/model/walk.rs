//! The walk over a parsed policy: the document and its rules. `match` and `grant` are walked in
//! their own modules; every error is collected with its path, none stops the walk.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};
use url::Url;

use super::{PolicyDocument, RuleDocument, MAX_COMPILED_MATCHERS, MAX_RULES, MAX_RULE_NAME_LEN};
use crate::policy::GITHUB_ACTIONS_ISSUER;

/// Walks a parsed policy, collecting every error.
#[derive(Default)]
pub(super) struct Walker {
    /// Every problem found, prefixed with its path.
    pub(super) errors: Vec<String>,
    /// Globs and regexes seen so far, against [`MAX_COMPILED_MATCHERS`].
    pub(super) compiled_matchers: usize,
}

/// `parent.key`, or `key` at the top.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// How a JSON value is called in messages.
pub(super) fn kind(v: &Value) -> &'static str {
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
    /// Record the problem `msg` at `path`.
    pub(super) fn err(&mut self, path: &str, msg: impl fmt::Display) {
        self.errors.push(format!("{path}: {msg}"));
    }

    /// Record every key of `obj` outside `allowed`: a typo must not silently drop a condition.
    pub(super) fn unknown_keys(&mut self, path: &str, obj: &Map<String, Value>, allowed: &[&str]) {
        for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.err(
                &join(path, key),
                format!("unknown key (expected one of {})", allowed.join(", ")),
            );
        }
    }

    /// `value` as a map. Otherwise record the problem at `path` and give `None`: when it is
    /// absent, `required` (an optional key has none, and records nothing); when it is not a
    /// map, that it must be `expected` (`a map of …`).
    pub(super) fn map<'v>(
        &mut self,
        path: &str,
        value: Option<&'v Value>,
        required: Option<&str>,
        expected: &str,
    ) -> Option<&'v Map<String, Value>> {
        match value {
            Some(Value::Object(obj)) => Some(obj),
            Some(other) => {
                self.err(path, format!("must be {expected}, not {}", kind(other)));
                None
            }
            None => {
                if let Some(required) = required {
                    self.err(path, format!("required: {required}"));
                }
                None
            }
        }
    }

    /// The whole document: `description` and `rules`, each rule checked and names unique.
    pub(super) fn policy(&mut self, value: &Value) -> PolicyDocument {
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
