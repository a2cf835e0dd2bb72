//! Printing the environment for the shell, a dotenv file, JSON or `$GITHUB_ENV`, and the
//! workflow commands that mask tokens in GitHub Actions logs.

use super::safety::token_value_is_safe;
use crate::model::ClientToken;
use rand::RngExt as _;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

/// `env --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EnvFormat {
    /// `export KEY='value'` lines for `eval`.
    Bash,
    /// One pretty-printed JSON object, keys sorted.
    Json,
    /// `KEY='value'` lines, as Atmos writes them.
    Dotenv,
    /// Bare `KEY=value` lines (Atmos's `env` format), for tools that read them verbatim.
    Env,
    /// `$GITHUB_ENV` lines; multi-line values as heredocs.
    Github,
}

/// Print `env` in `format`, keys sorted.
///
/// - bash: every value single-quoted, `'` written as `'\''`, so `eval` never expands anything.
/// - dotenv: `KEY='value'` with `'` written as `'\''`, byte for byte what Atmos CLI writes, so
///   files from either tool compare equal; python-dotenv, Docker Compose and `source` read the
///   values back unchanged (everything we emit is free of quotes and newlines).
/// - env: `KEY=value`, unquoted (Atmos's `env` format).
/// - github: `KEY=value`, or `KEY<<STS_EOF_<random hex>` … heredoc when the value spans lines, the
///   delimiter checked to be absent from the value.
pub(crate) fn format_env(env: &BTreeMap<String, String>, format: EnvFormat) -> String {
    let mut out = String::new();
    match format {
        EnvFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = env
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let _ = writeln!(out, "{:#}", serde_json::Value::Object(map));
        }
        EnvFormat::Bash => {
            for (k, v) in env {
                let _ = writeln!(out, "export {k}='{}'", v.replace('\'', r"'\''"));
            }
        }
        EnvFormat::Dotenv => {
            for (k, v) in env {
                let _ = writeln!(out, "{k}='{}'", v.replace('\'', r"'\''"));
            }
        }
        EnvFormat::Env => {
            for (k, v) in env {
                let _ = writeln!(out, "{k}={v}");
            }
        }
        EnvFormat::Github => {
            for (k, v) in env {
                if v.contains(['\n', '\r']) {
                    let delimiter = heredoc_delimiter(v);
                    let _ = writeln!(out, "{k}<<{delimiter}\n{v}\n{delimiter}");
                } else {
                    let _ = writeln!(out, "{k}={v}");
                }
            }
        }
    }
    out
}

/// A heredoc delimiter that does not occur in `value`; random so a value cannot be crafted to
/// close the heredoc early and inject further variables.
fn heredoc_delimiter(value: &str) -> String {
    let mut rng = rand::rng();
    loop {
        let delimiter = format!("STS_EOF_{}", hex::encode(rng.random::<[u8; 16]>()));
        if !value.contains(&delimiter) {
            return delimiter;
        }
    }
}

/// `::add-mask::TOKEN` lines (GitHub Actions workflow command) for every distinct token that
/// [`environment`] can print; the caller writes them to stdout when `GITHUB_ACTIONS=true`.
pub(crate) fn add_mask_lines(tokens: &[ClientToken]) -> String {
    let mut seen = HashSet::new();
    let mut out = String::new();
    for t in tokens {
        // An unsafe token is never printed, and a newline in it would end the command early.
        if token_value_is_safe(&t.token) && seen.insert(t.token.as_str()) {
            // The runner unescapes workflow-command data, so a `%` in the token must be escaped.
            let _ = writeln!(
                out,
                "::add-mask::{}",
                crate::ui::escape_command_data(&t.token)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tok;
    use crate::render::tests::map;

    fn sample_env() -> BTreeMap<String, String> {
        map(&[
            (
                "B_PLAIN",
                "url.https://x-access-token:ghs_A@github.com/acme/.insteadOf",
            ),
            ("A_QUOTE", "it's a \"test\""),
            ("C_MULTI", "line one\nline two $HOME `id` # \\"),
            ("D_EMPTY", ""),
        ])
    }

    #[test]
    fn bash_format_single_quotes_everything_and_round_trips_through_sh() {
        let out = format_env(&sample_env(), EnvFormat::Bash);
        assert_eq!(
            out.lines().next().unwrap(),
            r#"export A_QUOTE='it'\''s a "test"'"#
        );
        assert!(out.contains("export D_EMPTY=''\n"));
        let keys: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split('=').next())
            .collect();
        assert_eq!(keys, ["A_QUOTE", "B_PLAIN", "C_MULTI", "D_EMPTY"]);

        // The real test of the quoting: a shell reads every value back unchanged.
        for (key, value) in sample_env() {
            let script = format!("{out}printf '%s' \"${key}\"");
            let got = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(got.status.success());
            assert_eq!(String::from_utf8(got.stdout).unwrap(), value, "{key}");
        }
    }

    #[test]
    fn dotenv_and_env_formats_are_atmos_byte_for_byte() {
        let cases = [
            ("ghs_abc123", "K='ghs_abc123'", "K=ghs_abc123"),
            (
                "url.https://x-access-token:ghs_A@ghe.example.com:8443/acme/.insteadOf",
                "K='url.https://x-access-token:ghs_A@ghe.example.com:8443/acme/.insteadOf'",
                "K=url.https://x-access-token:ghs_A@ghe.example.com:8443/acme/.insteadOf",
            ),
            ("", "K=''", "K="),
            ("$HOME", "K='$HOME'", "K=$HOME"),
            ("it's", "K='it'\\''s'", "K=it's"),
        ];
        for (value, dotenv, env) in cases {
            let out = format_env(&map(&[("K", value)]), EnvFormat::Dotenv);
            assert_eq!(out, format!("{dotenv}\n"), "{value:?}");
            let out = format_env(&map(&[("K", value)]), EnvFormat::Env);
            assert_eq!(out, format!("{env}\n"), "{value:?}");
        }
    }

    #[test]
    fn json_format_is_a_sorted_object_that_parses_back() {
        let out = format_env(&sample_env(), EnvFormat::Json);
        let parsed: BTreeMap<String, String> = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, sample_env());
        let a = out.find("A_QUOTE").unwrap();
        let d = out.find("D_EMPTY").unwrap();
        assert!(a < d);
        assert!(out.ends_with("}\n"));
    }

    /// Parse a `$GITHUB_ENV` file the way the Actions runner does.
    fn parse_github_env(text: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut lines = text.split('\n');
        while let Some(line) = lines.next() {
            if line.is_empty() {
                continue;
            }
            if let Some((key, delimiter)) = line.split_once("<<") {
                let mut value = Vec::new();
                for l in lines.by_ref() {
                    if l == delimiter {
                        break;
                    }
                    value.push(l);
                }
                out.insert(key.to_owned(), value.join("\n"));
            } else {
                let (key, value) = line.split_once('=').unwrap();
                out.insert(key.to_owned(), value.to_owned());
            }
        }
        out
    }

    #[test]
    fn github_format_uses_heredocs_with_an_absent_delimiter_for_multiline_values() {
        let mut env = sample_env();
        env.insert(
            "E_TRICKY".to_owned(),
            "STS_EOF_\nSTS_EOF_00\nend".to_owned(),
        );
        let out = format_env(&env, EnvFormat::Github);
        assert!(out.starts_with("A_QUOTE=it's a \"test\"\nB_PLAIN="));
        assert!(out.contains("\nD_EMPTY=\n"));
        let heredoc = out.lines().find(|l| l.starts_with("C_MULTI<<")).unwrap();
        let delimiter = heredoc.strip_prefix("C_MULTI<<").unwrap();
        assert!(delimiter.starts_with("STS_EOF_") && delimiter.len() == 8 + 32);
        assert!(!env["C_MULTI"].contains(delimiter));
        assert_eq!(parse_github_env(&out), env);
    }

    #[test]
    fn mask_lines_cover_each_printable_token_once() {
        let tokens = [
            tok("github.com", "acme", "ghs_A", None),
            tok("github.com", "beta", "ghs_A", None),
            tok("", "", "ghs_B", None),
            tok("github.com", "acme", "", None),
            tok("github.com", "acme", "bad\n::set-env", None),
        ];
        assert_eq!(
            add_mask_lines(&tokens),
            "::add-mask::ghs_A\n::add-mask::ghs_B\n"
        );
    }
}
