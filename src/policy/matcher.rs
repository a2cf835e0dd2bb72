//! Claim matching: exact values, globs and anchored regexes, compiled once per policy.

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::Claims;

/// Longest `match_patterns` regex accepted, in bytes. Real workflow-ref patterns are a few
/// hundred bytes; anything longer is a mistake or an attempt to make compilation expensive.
pub const MAX_REGEX_LEN: usize = 1024;

/// Compiled-size budget for one regex or glob (bytes of the regex crate's program). Makes a
/// pathological pattern (`(a{100}){100}`-style blowups) a validation error instead of a
/// memory and CPU cost paid on every load of the policy.
pub const REGEX_SIZE_LIMIT: usize = 128 * 1024;

/// Claims holding GitHub logins (or `owner/name`), which GitHub treats case-insensitively:
/// `Acme/Infra` and `acme/infra` are the same repository, so a policy must not depend on the
/// spelling the token happens to carry.
const LOGIN_CLAIMS: &[&str] = &["repository", "repository_owner", "actor"];

/// Does `claim` hold a login (compared case-insensitively)?
pub(crate) fn is_login_claim(claim: &str) -> bool {
    LOGIN_CLAIMS.contains(&claim)
}

/// Does a policy string hold a glob metacharacter?
pub(crate) fn has_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Compile a glob to an anchored regex: `?` is one character except `/`, `*` any run of
/// characters except `/`, `**` any run including `/`; everything else is literal.
pub(crate) fn compile_glob(glob: &str, case_insensitive: bool) -> Result<Regex, String> {
    let mut re = String::with_capacity(glob.len() * 2 + 8);
    re.push('^');
    let mut chars = glob.chars().peekable();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                re.push_str("(?s:.*)");
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            _ => re.push_str(&regex::escape(c.encode_utf8(&mut buf))),
        }
    }
    re.push('$');
    build(&re, case_insensitive).map_err(|e| format!("glob does not compile: {e}"))
}

/// Compile a `match_patterns` regex, anchored as `^(?:PATTERN)$` so that `a|b` cannot match
/// `a-evil` (the Octo-STS anchoring gap).
pub(crate) fn compile_pattern(pattern: &str, case_insensitive: bool) -> Result<Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regex is {} bytes, longer than the limit of {MAX_REGEX_LEN}",
            pattern.len()
        ));
    }
    // Compile the bare pattern first: only a pattern that is a complete regex on its own can
    // be wrapped safely. `a)|(b` would otherwise turn the wrapper into `^(?:a)|(b)$`, which
    // matches anything starting with `a`.
    build(pattern, case_insensitive).map_err(|e| format!("regex does not compile: {e}"))?;
    build(&format!("^(?:{pattern})$"), case_insensitive)
        .map_err(|e| format!("regex does not compile: {e}"))
}

fn build(re: &str, case_insensitive: bool) -> Result<Regex, regex::Error> {
    RegexBuilder::new(re)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Match a repository name against a name glob (`*` any run, `?` one character),
/// case-insensitively, as GitHub compares repository names. A name with `/` never matches.
pub(crate) fn name_glob_matches(pattern: &str, name: &str) -> bool {
    if name.contains('/') {
        return false;
    }
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let n: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    // Linear-time wildcard matching: on a mismatch, let the most recent `*` swallow one more
    // character and retry from there. Earlier stars never need revisiting.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// One accepted value of a `match` entry.
#[derive(Debug, Clone)]
pub(crate) enum ValueMatcher {
    /// Literal string, compared exactly (or ASCII case-insensitively for login claims).
    Exact(String),
    /// A glob, compiled.
    Glob(Regex),
    /// A boolean: matches the claim `true`/`false` as a JSON bool or as a string.
    Bool(bool),
}

/// What a claim is checked against.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    /// `match`: any of these values.
    AnyOf(Vec<ValueMatcher>),
    /// `match_patterns`: an anchored regex.
    Pattern(Regex),
}

/// One claim check of a rule.
#[derive(Debug, Clone)]
pub(crate) struct ClaimMatcher {
    /// The claim name.
    pub(crate) claim: String,
    /// What the policy wrote for it (the value or values, or the pattern), for explanations.
    pub(crate) expected: Value,
    /// The check.
    pub(crate) test: Test,
}

/// Why a claim check failed. Never carries the claim's value: reasons go to logs and audit,
/// and a caller-controlled value there could be used for log injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The claim is absent.
    Missing,
    /// The claim is a number, null, list or object: only strings and bools ever match.
    NotAString,
    /// The claim is a string or bool that the check rejects.
    NoMatch,
}

impl ClaimMatcher {
    /// Check the caller's claims.
    pub(crate) fn check(&self, claims: &Claims) -> Result<(), Mismatch> {
        let (text, as_bool) = match claims.get(&self.claim) {
            None => return Err(Mismatch::Missing),
            Some(Value::String(s)) => (s.as_str(), None),
            Some(Value::Bool(true)) => ("true", Some(true)),
            Some(Value::Bool(false)) => ("false", Some(false)),
            Some(_) => return Err(Mismatch::NotAString),
        };
        let ok = match &self.test {
            Test::AnyOf(values) => values.iter().any(|v| match v {
                ValueMatcher::Exact(want) if is_login_claim(&self.claim) => {
                    want.eq_ignore_ascii_case(text)
                }
                ValueMatcher::Exact(want) => want == text,
                ValueMatcher::Glob(re) => re.is_match(text),
                ValueMatcher::Bool(want) => match as_bool {
                    Some(b) => b == *want,
                    None => text == if *want { "true" } else { "false" },
                },
            }),
            Test::Pattern(re) => re.is_match(text),
        };
        if ok {
            Ok(())
        } else {
            Err(Mismatch::NoMatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_treat_slash_specially() {
        // (glob, input, matches)
        let cases = [
            ("refs/heads/*", "refs/heads/main", true),
            ("refs/heads/*", "refs/heads/feature/x", false),
            ("refs/heads/**", "refs/heads/feature/x", true),
            ("refs/heads/**", "refs/heads/", true),
            ("refs/tags/v?", "refs/tags/v1", true),
            ("refs/tags/v?", "refs/tags/v10", false),
            ("a?b", "a/b", false),
            ("acme/*", "acme/infra", true),
            ("acme/*", "acme-evil/infra", false),
            ("acme/infra-*", "acme/infra", false),
            ("acme/infra-*", "acme/infra-", true),
            ("*.yml", "x.yml", true),
            ("*.yml", "xayml", false),
            ("a+b(c)", "a+b(c)", true),
            ("a+b(c)", "aab(c)", false),
            ("**", "any/thing\nat all", true),
        ];
        for (glob, input, want) in cases {
            let re = compile_glob(glob, false).unwrap();
            assert_eq!(re.is_match(input), want, "{glob} vs {input:?}");
        }
    }

    #[test]
    fn patterns_are_anchored_at_both_ends() {
        // (pattern, input, matches)
        let cases = [
            ("a|b", "a", true),
            ("a|b", "b", true),
            ("a|b", "a-evil", false),
            ("a|b", "evil-b", false),
            ("main", "refs/heads/main", false),
            ("refs/heads/main", "refs/heads/main2", false),
            ("refs/heads/main", "refs/heads/main\n", false),
            ("(?m)main$", "main\nevil", false),
            ("refs/heads/(main|release-.*)", "refs/heads/release-1", true),
        ];
        for (pattern, input, want) in cases {
            let re = compile_pattern(pattern, false).unwrap();
            assert_eq!(re.is_match(input), want, "{pattern} vs {input:?}");
        }
    }

    #[test]
    fn patterns_that_would_escape_the_anchoring_group_are_rejected() {
        for pattern in ["a)|(b", "a)|(?:b", "x\\", "[a", "(?x)a#)|(b"] {
            let got = compile_pattern(pattern, false);
            if let Ok(re) = got {
                // A pattern that compiles must still be anchored.
                assert!(!re.is_match("a-evil"), "{pattern}");
                assert!(!re.is_match("evil-b"), "{pattern}");
            }
        }
        assert!(compile_pattern("a)|(b", false).is_err());
    }

    #[test]
    fn oversized_or_pathological_patterns_are_errors() {
        let long = "a".repeat(MAX_REGEX_LEN + 1);
        assert!(compile_pattern(&long, false)
            .unwrap_err()
            .contains("longer than the limit"));
        let blowup = "((((a{100}){100}){100}){100})";
        assert!(compile_pattern(blowup, false).is_err());
    }

    #[test]
    fn name_globs_match_case_insensitively_and_never_across_slashes() {
        let cases = [
            ("terraform-*", "terraform-aws", true),
            ("terraform-*", "Terraform-AWS", true),
            ("terraform-*", "terraform", false),
            ("modules", "Modules", true),
            ("modules", "modules2", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("?", "x", true),
            ("?", "xy", false),
            ("*-infra", "a/b-infra", false),
            ("", "", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                name_glob_matches(pattern, name),
                want,
                "{pattern} vs {name}"
            );
        }
    }
}
