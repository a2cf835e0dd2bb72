//! What [`environment`] renders, checked against what Atmos writes and against git's own rule
//! for choosing among `insteadOf` rewrites.

use super::token_env::DEFAULT_TOKEN_ENV;
use super::*;
use crate::model::tok;
use std::path::Path;

fn env_opts(token_env: TokenEnv) -> RenderOptions {
    RenderOptions {
        mode: GitConfigMode::Env,
        token_env,
        git_config_path: None,
    }
}

/// Options for file mode, with the config file at `path`.
fn file_opts(token_env: TokenEnv, path: impl Into<PathBuf>) -> RenderOptions {
    RenderOptions {
        mode: GitConfigMode::File,
        token_env,
        git_config_path: Some(path.into()),
    }
}

/// What `tokens` render to in env mode.
fn rendered(tokens: &[ClientToken], token_env: TokenEnv) -> Rendered {
    environment(tokens, &env_opts(token_env)).unwrap()
}

pub(super) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// git's `alias_url` (remote.c): the longest matching `insteadOf` wins, and among equally long
/// ones the first `url.<base>` section configured; sections are ordered by first appearance.
fn git_rewrite(env: &BTreeMap<String, String>, url: &str) -> Option<String> {
    let count: usize = env.get("GIT_CONFIG_COUNT")?.parse().ok()?;
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for n in 0..count {
        let key = &env[&format!("GIT_CONFIG_KEY_{n}")];
        let value = env[&format!("GIT_CONFIG_VALUE_{n}")].clone();
        let base = key
            .strip_prefix("url.")
            .and_then(|k| k.strip_suffix(".insteadOf"))
            .unwrap()
            .to_owned();
        match sections.iter_mut().find(|(b, _)| *b == base) {
            Some((_, values)) => values.push(value),
            None => sections.push((base, vec![value])),
        }
    }
    let mut best: Option<(&str, &str)> = None;
    for (base, values) in &sections {
        for value in values {
            if url.starts_with(value.as_str()) && best.is_none_or(|(_, v)| v.len() < value.len()) {
                best = Some((base, value));
            }
        }
    }
    best.map(|(base, value)| format!("{base}{}", &url[value.len()..]))
}

#[test]
fn one_token_renders_exactly_what_atmos_writes() {
    let tokens = [tok("github.com", "acme", "ghs_A", Some(&["acme/modules"]))];
    let got = rendered(&tokens, TokenEnv::Default);
    let key = "url.https://x-access-token:ghs_A@github.com/acme/.insteadOf";
    assert_eq!(
        got.env,
        map(&[
            ("GIT_CONFIG_COUNT", "2"),
            ("GIT_CONFIG_KEY_0", key),
            ("GIT_CONFIG_VALUE_0", "https://github.com/acme/"),
            ("GIT_CONFIG_KEY_1", key),
            ("GIT_CONFIG_VALUE_1", "ssh://git@github.com/acme/"),
            ("ATMOS_PRO_GITHUB_TOKEN", "ghs_A"),
        ])
    );
    assert_eq!(got.git_config_file, None);
    assert!(got.warnings.is_empty());
}

#[test]
fn one_token_per_owner_keeps_response_order_and_drops_the_default_export() {
    let tokens = [
        tok("github.com", "beta", "ghs_B", None),
        tok("ghe.example.com:8443", "acme", "ghs_A", Some(&["acme/x"])),
    ];
    let got = rendered(&tokens, TokenEnv::Default);
    let b = "url.https://x-access-token:ghs_B@github.com/beta/.insteadOf";
    let a = "url.https://x-access-token:ghs_A@ghe.example.com:8443/acme/.insteadOf";
    assert_eq!(
        got.env,
        map(&[
            ("GIT_CONFIG_COUNT", "4"),
            ("GIT_CONFIG_KEY_0", b),
            ("GIT_CONFIG_VALUE_0", "https://github.com/beta/"),
            ("GIT_CONFIG_KEY_1", b),
            ("GIT_CONFIG_VALUE_1", "ssh://git@github.com/beta/"),
            ("GIT_CONFIG_KEY_2", a),
            ("GIT_CONFIG_VALUE_2", "https://ghe.example.com:8443/acme/"),
            ("GIT_CONFIG_KEY_3", a),
            ("GIT_CONFIG_VALUE_3", "ssh://git@ghe.example.com:8443/acme/"),
        ])
    );
    // The default name skips quietly, as in Atmos (debug log only).
    assert!(got.warnings.is_empty());
}

#[test]
fn tokens_missing_a_field_are_skipped_like_atmos() {
    let cases: &[(&str, Vec<ClientToken>, BTreeMap<String, String>)] = &[
        ("no tokens", vec![], BTreeMap::new()),
        (
            "no host: no rewrite, but Atmos still exports it (token and owner suffice)",
            vec![tok("", "acme", "ghs_A", None)],
            map(&[("ATMOS_PRO_GITHUB_TOKEN", "ghs_A")]),
        ),
        (
            "no owner, no token",
            vec![
                tok("github.com", "", "ghs_A", None),
                tok("github.com", "acme", "", None),
            ],
            BTreeMap::new(),
        ),
        (
            "a host-less token still counts against the single-token export",
            vec![
                tok("", "acme", "ghs_A", None),
                tok("github.com", "beta", "ghs_B", None),
            ],
            map(&[
                ("GIT_CONFIG_COUNT", "2"),
                (
                    "GIT_CONFIG_KEY_0",
                    "url.https://x-access-token:ghs_B@github.com/beta/.insteadOf",
                ),
                ("GIT_CONFIG_VALUE_0", "https://github.com/beta/"),
                (
                    "GIT_CONFIG_KEY_1",
                    "url.https://x-access-token:ghs_B@github.com/beta/.insteadOf",
                ),
                ("GIT_CONFIG_VALUE_1", "ssh://git@github.com/beta/"),
            ]),
        ),
    ];
    for (name, tokens, want) in cases {
        let got = rendered(tokens, TokenEnv::Default);
        assert_eq!(&got.env, want, "{name}");
    }
}

#[test]
fn file_mode_writes_atmos_layout_and_points_include_path_at_it() {
    let tokens = [
        tok("github.com", "acme", "ghs_A", None),
        tok("github.com", "beta", "ghs_B", None),
    ];
    let opts = file_opts(
        TokenEnv::Name("GH_TOKEN_{{ .owner }}".to_owned()),
        "/state/git.config",
    );
    let got = environment(&tokens, &opts).unwrap();
    assert_eq!(
        got.git_config_file.as_deref(),
        Some(
            "[url \"https://x-access-token:ghs_A@github.com/acme/\"]\n\
             \tinsteadOf = https://github.com/acme/\n\
             \tinsteadOf = ssh://git@github.com/acme/\n\
             [url \"https://x-access-token:ghs_B@github.com/beta/\"]\n\
             \tinsteadOf = https://github.com/beta/\n\
             \tinsteadOf = ssh://git@github.com/beta/\n"
        )
    );
    assert_eq!(
        got.env,
        map(&[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "include.path"),
            ("GIT_CONFIG_VALUE_0", "/state/git.config"),
            ("GH_TOKEN_ACME", "ghs_A"),
            ("GH_TOKEN_BETA", "ghs_B"),
        ])
    );
}

#[test]
fn file_mode_with_no_tokens_still_includes_the_empty_file_like_atmos() {
    let opts = file_opts(TokenEnv::Default, "/state/git.config");
    let got = environment(&[], &opts).unwrap();
    assert_eq!(got.git_config_file.as_deref(), Some(""));
    assert_eq!(
        got.env,
        map(&[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "include.path"),
            ("GIT_CONFIG_VALUE_0", "/state/git.config"),
        ])
    );
}

#[test]
fn file_mode_needs_an_absolute_path() {
    for (path, want) in [
        (None, "--git-config-mode file needs a path"),
        (Some("git.config"), "needs an absolute git config path"),
    ] {
        let opts = RenderOptions {
            mode: GitConfigMode::File,
            token_env: TokenEnv::Default,
            git_config_path: path.map(PathBuf::from),
        };
        let err = environment(&[], &opts).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn git_config_mode_parses_env_and_file_only() {
    assert_eq!("env".parse::<GitConfigMode>().unwrap(), GitConfigMode::Env);
    assert_eq!(
        "file".parse::<GitConfigMode>().unwrap(),
        GitConfigMode::File
    );
    for bad in ["", "ENV", "files", "inline"] {
        let err = bad.parse::<GitConfigMode>().unwrap_err().to_string();
        assert!(
            err.contains("--git-config-mode must be env or file"),
            "{err}"
        );
    }
}

#[test]
fn token_env_flag_maps_absent_empty_and_named() {
    assert_eq!(TokenEnv::from_flag(None), TokenEnv::Default);
    assert_eq!(TokenEnv::from_flag(Some("")), TokenEnv::Disabled);
    assert_eq!(
        TokenEnv::from_flag(Some("GH_TOKEN")),
        TokenEnv::Name("GH_TOKEN".to_owned())
    );
}

#[test]
fn disabled_token_env_exports_no_raw_token() {
    let tokens = [tok("github.com", "acme", "ghs_A", None)];
    let got = rendered(&tokens, TokenEnv::Disabled);
    assert_eq!(got.env.len(), 5);
    assert!(!got.env.values().any(|v| v == "ghs_A"));
}

#[test]
fn literal_token_env_exports_one_token_and_warns_when_there_are_several() {
    let one = [tok("github.com", "acme", "ghs_A", None)];
    let got = rendered(&one, TokenEnv::from_flag(Some("GH_TOKEN")));
    assert_eq!(got.env.get("GH_TOKEN").map(String::as_str), Some("ghs_A"));
    assert!(!got.env.contains_key(DEFAULT_TOKEN_ENV));

    let two = [
        tok("github.com", "acme", "ghs_A", None),
        tok("github.com", "beta", "ghs_B", None),
    ];
    let got = rendered(&two, TokenEnv::from_flag(Some("GH_TOKEN")));
    assert!(!got.env.contains_key("GH_TOKEN"));
    assert_eq!(got.warnings.len(), 1);
    assert!(got.warnings[0].contains("2 tokens"), "{:?}", got.warnings);
    assert!(!got.warnings[0].contains("ghs_"));
}

#[test]
fn templates_render_per_token_and_sanitise_like_atmos() {
    let cases = [
        (
            "GH_TOKEN_{owner}",
            "github.com",
            "acme-labs",
            "GH_TOKEN_ACME_LABS",
        ),
        (
            "GH_TOKEN_{{ .owner }}",
            "github.com",
            "acme",
            "GH_TOKEN_ACME",
        ),
        ("GH_TOKEN_{{.owner}}", "github.com", "Acme", "GH_TOKEN_ACME"),
        (
            "TOKEN_{{ .host }}_{{ .owner }}",
            "github.com",
            "acme",
            "TOKEN_GITHUB_COM_ACME",
        ),
        (
            "TOKEN_{host}",
            "127.0.0.1:8443",
            "acme",
            "TOKEN_127_0_0_1_8443",
        ),
        (
            "gh-token-{owner}",
            "github.com",
            "acme.io",
            "GH_TOKEN_ACME_IO",
        ),
        ("{owner}", "github.com", "acme", "ACME"),
    ];
    for (flag, host, owner, want) in cases {
        let tokens = [tok(host, owner, "ghs_A", None)];
        let got = rendered(&tokens, TokenEnv::from_flag(Some(flag)));
        assert_eq!(
            got.env.get(want).map(String::as_str),
            Some("ghs_A"),
            "{flag}"
        );
    }
}

#[test]
fn bad_token_env_names_are_errors_naming_the_flag() {
    let tokens = [tok("github.com", "42corp", "ghs_A", None)];
    let cases = [
        ("GH_{repo}", "unknown placeholder \"{repo}\""),
        ("GH_{{ .repo }}", "unknown placeholder \"{{ .repo }}\""),
        ("GH_{{ owner }}", "unknown placeholder"),
        ("GH_{{- .owner }}", "unknown placeholder"),
        ("GH_{ owner }", "unknown placeholder"),
        ("GH_{owner", "unmatched brace"),
        ("GH_owner}", "unmatched brace"),
        ("GH_{{ .owner }", "unmatched brace"),
        ("MY-TOKEN", "not a valid environment variable name"),
        ("GIT_CONFIG_COUNT", "clobber git's GIT_CONFIG"),
    ];
    for (flag, want) in cases {
        let err = environment(&tokens, &env_opts(TokenEnv::from_flag(Some(flag))))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--token-env"), "{flag}: {err}");
        assert!(err.contains(want), "{flag}: {err}");
    }
}

#[test]
fn a_template_name_that_cannot_be_used_skips_that_token_only() {
    let tokens = [
        tok("github.com", "42corp", "ghs_A", None),
        tok("github.com", "acme", "ghs_B", None),
    ];
    // A leading digit is fine (Atmos exports it too).
    let got = rendered(&tokens, TokenEnv::from_flag(Some("{owner}_TOKEN")));
    assert_eq!(got.env["42CORP_TOKEN"], "ghs_A");
    assert_eq!(got.env["ACME_TOKEN"], "ghs_B");
    // A name that would clobber git's variables is skipped with a warning; the rest stays.
    let got = rendered(&tokens, TokenEnv::from_flag(Some("GIT_CONFIG_{owner}")));
    assert!(!got.env.contains_key("GIT_CONFIG_ACME"));
    assert_eq!(got.env["GIT_CONFIG_COUNT"], "4");
    assert!(
        got.warnings
            .iter()
            .any(|w| w.contains("clobber git's GIT_CONFIG")),
        "{:?}",
        got.warnings
    );
}

#[test]
fn odd_but_harmless_token_characters_are_written_as_atmos_writes_them() {
    let tokens = [tok("github.com", "acme", "ab/c+d=\"e\\f", None)];
    let got = rendered(&tokens, TokenEnv::Default);
    assert_eq!(
        got.env["GIT_CONFIG_KEY_0"],
        "url.https://x-access-token:ab/c+d=\"e\\f@github.com/acme/.insteadOf"
    );
    assert_eq!(got.env["ATMOS_PRO_GITHUB_TOKEN"], "ab/c+d=\"e\\f");
    let file = environment(
        &tokens,
        &file_opts(TokenEnv::Default, "/tmp/state/git.config"),
    )
    .unwrap()
    .git_config_file
    .unwrap();
    assert!(
        file.starts_with("[url \"https://x-access-token:ab/c+d=\\\"e\\\\f@github.com/acme/\"]\n"),
        "{file}"
    );
    // `@` would move the host: refused.
    let got = rendered(
        &[tok("github.com", "acme", "x@evil.example/", None)],
        TokenEnv::Default,
    );
    assert!(got.env.is_empty());
}

#[test]
fn template_errors_surface_even_without_tokens() {
    let err = environment(&[], &env_opts(TokenEnv::from_flag(Some("X_{nope}"))));
    assert!(matches!(err, Err(RenderError::UnknownPlaceholder { .. })));
}

#[test]
fn two_tokens_rendering_one_name_pick_deterministically_and_warn() {
    let flag = TokenEnv::from_flag(Some("GH_TOKEN_{owner}"));
    let cases = [
        (
            "the later token wins, as Atmos's last-write-wins",
            vec![
                tok("github.com", "acme", "ghs_W", None),
                tok("github.com", "acme", "ghs_S", Some(&["acme/modules"])),
            ],
            "ghs_S",
        ),
        (
            "scoped first",
            vec![
                tok("github.com", "acme", "ghs_S", Some(&["acme/modules"])),
                tok("github.com", "acme", "ghs_W", None),
            ],
            "ghs_W",
        ),
        (
            "two scoped tokens: the last, as Atmos",
            vec![
                tok("github.com", "acme", "ghs_1", Some(&["acme/a"])),
                tok("github.com", "acme", "ghs_2", Some(&["acme/b"])),
            ],
            "ghs_2",
        ),
        (
            "owners differing only in case collide after uppercasing",
            vec![
                tok("github.com", "Acme", "ghs_1", None),
                tok("github.com", "acme", "ghs_2", None),
            ],
            "ghs_2",
        ),
    ];
    for (name, tokens, want) in cases {
        let got = rendered(&tokens, flag.clone());
        assert_eq!(got.env["GH_TOKEN_ACME"], want, "{name}");
        let warning = got
            .warnings
            .iter()
            .find(|w| w.contains("render GH_TOKEN_ACME"))
            .unwrap();
        assert!(warning.contains("2 tokens"), "{name}: {warning}");
    }
}

#[test]
fn several_tokens_of_one_owner_with_a_whole_installation_token_route_by_repository() {
    let tokens = [
        tok(
            "github.com",
            "acme",
            "ghs_S",
            Some(&["acme/modules", "beta/ignored"]),
        ),
        tok("github.com", "acme", "ghs_W", None),
    ];
    let got = rendered(&tokens, TokenEnv::Disabled);
    let w = "url.https://x-access-token:ghs_W@github.com/acme/.insteadOf";
    let s_git = "url.https://x-access-token:ghs_S@github.com/acme/modules.git.insteadOf";
    let s_dir = "url.https://x-access-token:ghs_S@github.com/acme/modules/.insteadOf";
    assert_eq!(
        got.env,
        map(&[
            ("GIT_CONFIG_COUNT", "6"),
            ("GIT_CONFIG_KEY_0", s_git),
            ("GIT_CONFIG_VALUE_0", "https://github.com/acme/modules.git"),
            ("GIT_CONFIG_KEY_1", s_git),
            (
                "GIT_CONFIG_VALUE_1",
                "ssh://git@github.com/acme/modules.git"
            ),
            ("GIT_CONFIG_KEY_2", s_dir),
            ("GIT_CONFIG_VALUE_2", "https://github.com/acme/modules/"),
            ("GIT_CONFIG_KEY_3", s_dir),
            ("GIT_CONFIG_VALUE_3", "ssh://git@github.com/acme/modules/"),
            ("GIT_CONFIG_KEY_4", w),
            ("GIT_CONFIG_VALUE_4", "https://github.com/acme/"),
            ("GIT_CONFIG_KEY_5", w),
            ("GIT_CONFIG_VALUE_5", "ssh://git@github.com/acme/"),
        ])
    );
    let routes = [
        (
            "https://github.com/acme/modules.git",
            Some("ghs_S@github.com/acme/modules.git"),
        ),
        (
            "https://github.com/acme/modules/sub",
            Some("ghs_S@github.com/acme/modules/sub"),
        ),
        (
            "ssh://git@github.com/acme/modules.git",
            Some("ghs_S@github.com/acme/modules.git"),
        ),
        // Bare URL and unlisted siblings fall through to the token that reaches them.
        (
            "https://github.com/acme/modules",
            Some("ghs_W@github.com/acme/modules"),
        ),
        (
            "https://github.com/acme/modules-extra.git",
            Some("ghs_W@github.com/acme/modules-extra.git"),
        ),
        // The documented residual collision: git prefixes cannot end at `.git`.
        (
            "https://github.com/acme/modules.github.io",
            Some("ghs_S@github.com/acme/modules.github.io"),
        ),
        (
            "https://github.com/acme/other",
            Some("ghs_W@github.com/acme/other"),
        ),
        ("https://github.com/beta/modules.git", None),
    ];
    for (url, want) in routes {
        let got = git_rewrite(&got.env, url);
        let want = want.map(|w| format!("https://x-access-token:{w}"));
        assert_eq!(got, want, "{url}");
    }
}

#[test]
fn several_scoped_tokens_of_one_owner_route_by_longest_repository_prefix() {
    let tokens = [
        tok("github.com", "acme", "ghs_1", Some(&["acme/modules"])),
        tok(
            "github.com",
            "acme",
            "ghs_2",
            Some(&["ACME/modules-extra", "acme/infra"]),
        ),
    ];
    let got = rendered(&tokens, TokenEnv::Disabled);
    assert_eq!(got.env["GIT_CONFIG_COUNT"], "8");
    assert_eq!(
        got.env["GIT_CONFIG_KEY_2"],
        "url.https://x-access-token:ghs_1@github.com/acme/modules.insteadOf"
    );
    assert_eq!(
        got.env["GIT_CONFIG_VALUE_2"],
        "https://github.com/acme/modules"
    );
    let routes = [
        (
            "https://github.com/acme/modules",
            "ghs_1@github.com/acme/modules",
        ),
        (
            "https://github.com/acme/modules.git",
            "ghs_1@github.com/acme/modules.git",
        ),
        (
            "https://github.com/acme/modules-extra",
            "ghs_2@github.com/acme/modules-extra",
        ),
        (
            "ssh://git@github.com/acme/modules-extra.git",
            "ghs_2@github.com/acme/modules-extra.git",
        ),
        (
            "https://github.com/acme/infra.git",
            "ghs_2@github.com/acme/infra.git",
        ),
        (
            "https://github.com/acme/unlisted",
            "ghs_1@github.com/acme/unlisted",
        ),
    ];
    for (url, want) in routes {
        assert_eq!(
            git_rewrite(&got.env, url),
            Some(format!("https://x-access-token:{want}")),
            "{url}"
        );
    }
}

#[test]
fn a_second_whole_installation_token_of_one_owner_is_reported_not_routed() {
    let tokens = [
        tok("github.com", "acme", "ghs_R", None),
        tok("github.com", "acme", "ghs_W", None),
    ];
    let got = rendered(&tokens, TokenEnv::Disabled);
    assert_eq!(got.env["GIT_CONFIG_COUNT"], "2");
    assert!(!got.env.values().any(|v| v.contains("ghs_W")));
    assert_eq!(got.warnings.len(), 1);
    assert!(
        got.warnings[0].contains("github.com/acme"),
        "{:?}",
        got.warnings
    );
}

#[test]
fn a_repository_listed_twice_keeps_the_first_token() {
    let tokens = [
        tok("github.com", "acme", "ghs_1", Some(&["acme/modules"])),
        tok("github.com", "acme", "ghs_2", Some(&["acme/modules"])),
    ];
    let got = rendered(&tokens, TokenEnv::Disabled);
    // Owner prefix and modules for ghs_1; nothing left for ghs_2.
    assert_eq!(got.env["GIT_CONFIG_COUNT"], "4");
    assert!(!got.env.values().any(|v| v.contains("ghs_2")));
}

#[test]
fn owners_differing_in_case_are_separate_prefixes_for_git() {
    let tokens = [
        tok("github.com", "Acme", "ghs_1", Some(&["Acme/a"])),
        tok("github.com", "acme", "ghs_2", Some(&["acme/b"])),
    ];
    let got = rendered(&tokens, TokenEnv::Disabled);
    assert_eq!(got.env["GIT_CONFIG_COUNT"], "4");
    assert_eq!(
        git_rewrite(&got.env, "https://github.com/Acme/a"),
        Some("https://x-access-token:ghs_1@github.com/Acme/a".to_owned())
    );
}

#[test]
fn file_mode_carries_the_per_repository_sections_too() {
    let tokens = [
        tok("github.com", "acme", "ghs_1", Some(&["acme/modules"])),
        tok("github.com", "acme", "ghs_2", Some(&["acme/infra"])),
    ];
    let opts = file_opts(TokenEnv::Disabled, "/s/git.config");
    let got = environment(&tokens, &opts).unwrap();
    assert_eq!(
        got.git_config_file.unwrap(),
        "[url \"https://x-access-token:ghs_1@github.com/acme/\"]\n\
         \tinsteadOf = https://github.com/acme/\n\
         \tinsteadOf = ssh://git@github.com/acme/\n\
         [url \"https://x-access-token:ghs_1@github.com/acme/modules\"]\n\
         \tinsteadOf = https://github.com/acme/modules\n\
         \tinsteadOf = ssh://git@github.com/acme/modules\n\
         [url \"https://x-access-token:ghs_2@github.com/acme/infra\"]\n\
         \tinsteadOf = https://github.com/acme/infra\n\
         \tinsteadOf = ssh://git@github.com/acme/infra\n"
    );
}

#[test]
fn tokens_that_could_inject_git_configuration_are_dropped_with_a_warning() {
    let hostile = [
        tok(
            "github.com",
            "acme",
            "ghs_A\n[core]\n\tsshCommand = evil",
            None,
        ),
        tok("github.com", "acme\"]\n[core", "ghs_B", None),
        tok("github.com/evil", "acme", "ghs_C", None),
        tok("github.com", "acme", "ghs_D@evil", None),
        tok("gith ub.com", "acme", "ghs_E", None),
        tok("github.com", "ac/me", "ghs_F", None),
    ];
    for t in hostile {
        let got = rendered(std::slice::from_ref(&t), TokenEnv::Default);
        assert!(got.env.is_empty(), "{:?}", got.env);
        assert_eq!(got.warnings.len(), 1);
        assert!(!got.warnings[0].contains("ghs_"));
        assert!(got.warnings[0].contains("#1"));
    }
}

#[test]
fn malformed_repository_entries_get_no_rewrite() {
    let tokens = [
        tok("github.com", "acme", "ghs_1", None),
        tok(
            "github.com",
            "acme",
            "ghs_2",
            Some(&["acme/", "modules", "acme/a b", "acme/..", "acme/ok"]),
        ),
    ];
    let got = rendered(&tokens, TokenEnv::Disabled);
    // Owner prefix (2) + ok.git and ok/ (2 each).
    assert_eq!(got.env["GIT_CONFIG_COUNT"], "6");
}

#[test]
fn debug_output_never_shows_a_token() {
    let tokens = [tok("github.com", "acme", "ghs_SECRET", None)];
    let opts = file_opts(TokenEnv::Default, "/s/git.config");
    let shown = format!("{:?}", environment(&tokens, &opts).unwrap());
    assert!(!shown.contains("ghs_SECRET"), "{shown}");
    assert!(shown.contains("ATMOS_PRO_GITHUB_TOKEN"), "{shown}");
}

#[test]
fn include_path_is_passed_through_verbatim() {
    let path = Path::new("/home/runner/.local/share/sts client/git.config");
    let opts = file_opts(TokenEnv::Disabled, path.to_path_buf());
    let got = environment(&[], &opts).unwrap();
    assert_eq!(got.env["GIT_CONFIG_VALUE_0"], path.to_str().unwrap());
}
