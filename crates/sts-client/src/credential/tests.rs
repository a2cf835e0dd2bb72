//! The credential-helper protocol against what git sends and reads (`gitcredentials(7)`).

use super::*;
use crate::model::tok;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);

fn req(protocol: &str, host: &str, path: Option<&str>) -> CredentialRequest {
    CredentialRequest {
        protocol: Some(protocol.to_owned()),
        host: Some(host.to_owned()),
        path: path.map(str::to_owned),
        ..CredentialRequest::default()
    }
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[test]
fn parses_what_git_really_sends() {
    // Lines as git 2.47 sends them to a helper (`credential fill`, `ls-remote`, useHttpPath).
    let got = parse_request(
        "protocol=https\nhost=GitHub.com:8443\npath=Acme/Modules.git\n\
         capability[]=authtype\ncapability[]=state\nwwwauth[]=Basic realm=\"x\"\n",
    )
    .unwrap();
    assert_eq!(
        got,
        req("https", "GitHub.com:8443", Some("Acme/Modules.git"))
    );
}

#[test]
fn parse_handles_the_nasty_cases() {
    let cases: &[(&str, &str, CredentialRequest)] = &[
        (
            "values may contain '='",
            "protocol=https\nhost=h\npassword=a=b==\n",
            CredentialRequest {
                protocol: some("https"),
                host: some("h"),
                password: some("a=b=="),
                ..CredentialRequest::default()
            },
        ),
        (
            "CRLF line ends",
            "protocol=https\r\nhost=h\r\npath=o/r\r\n\r\nhost=ignored\n",
            req("https", "h", Some("o/r")),
        ),
        (
            "a blank line ends the request",
            "protocol=https\nhost=h\n\npath=ignored\n",
            req("https", "h", None),
        ),
        (
            "no trailing newline",
            "protocol=https\nhost=h",
            req("https", "h", None),
        ),
        ("empty input", "", CredentialRequest::default()),
        (
            "later lines win",
            "host=a\nhost=b\nprotocol=https\n",
            req("https", "b", None),
        ),
        (
            "unknown keys are ignored",
            "protocol=https\nhost=h\npassword_expiry_utc=1\nstate[]=x\nfoo=bar\n",
            req("https", "h", None),
        ),
        (
            "url= is split into parts",
            "url=https://x-access-token:p%40ss=@GitHub.com:8443/Acme/Mod%20ules.git/\n",
            CredentialRequest {
                protocol: some("https"),
                host: some("GitHub.com:8443"),
                path: some("Acme/Mod ules.git"),
                username: some("x-access-token"),
                password: some("p@ss="),
            },
        ),
        (
            "url= without a path or user",
            "url=https://github.com\n",
            req("https", "github.com", None),
        ),
        (
            "url= resets earlier fields, later ones override it",
            "path=old\nusername=u\nurl=https://h/o/r\nhost=other\n",
            req("https", "other", Some("o/r")),
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(&parse_request(input).unwrap(), want, "{name}");
    }
}

#[test]
fn parse_rejects_nul_lines_without_equals_and_schemeless_urls() {
    for (input, want) in [
        ("protocol=https\nhost=h\0\n", "NUL"),
        ("protocol=https\nbogus\n", "without '='"),
        ("url=github.com/o/r\n", "no scheme"),
        ("url=https://h/o%00r\n", "NUL"),
        ("url=https://h/%ff\n", "UTF-8"),
    ] {
        let err = parse_request(input).unwrap_err();
        assert!(err.contains(want), "{input:?}: {err}");
    }
}

#[test]
fn debug_redacts_the_password() {
    let r = parse_request("protocol=https\nhost=h\npassword=ghs_secret\n").unwrap();
    let shown = format!("{r:?}");
    assert!(!shown.contains("ghs_secret"));
    assert!(shown.contains("[redacted]"));
}

#[test]
fn select_picks_the_token_known_to_reach_the_repository() {
    let tokens = [
        tok("github.com", "acme", "ghs_W", None),
        tok("github.com", "acme", "ghs_S", Some(&["acme/modules"])),
        tok("github.com", "beta", "ghs_B", Some(&["beta/infra"])),
        tok("ghe.example.com:8443", "acme", "ghs_E", None),
    ];
    let cases = [
        (
            "listed repository",
            req("https", "github.com", Some("acme/modules")),
            Some("ghs_S"),
        ),
        (
            ".git suffix",
            req("https", "github.com", Some("acme/modules.git")),
            Some("ghs_S"),
        ),
        (
            "case-insensitive",
            req("https", "GitHub.com", Some("ACME/Modules.GIT")),
            Some("ghs_S"),
        ),
        (
            "leading slash",
            req("https", "github.com", Some("/acme/modules")),
            Some("ghs_S"),
        ),
        (
            "unlisted: whole installation",
            req("https", "github.com", Some("acme/other")),
            Some("ghs_W"),
        ),
        (
            "prefix is not a match",
            req("https", "github.com", Some("acme/modules-extra")),
            Some("ghs_W"),
        ),
        (
            "owner only",
            req("https", "github.com", Some("acme")),
            Some("ghs_W"),
        ),
        (
            "never a repository its list leaves out",
            req("https", "github.com", Some("beta/other")),
            None,
        ),
        (
            "scoped repository",
            req("https", "github.com", Some("beta/infra.git")),
            Some("ghs_B"),
        ),
        (
            "unknown owner",
            req("https", "github.com", Some("gamma/x")),
            None,
        ),
        (
            "port must match",
            req("https", "ghe.example.com", Some("acme/x")),
            None,
        ),
        (
            "with its port",
            req("https", "ghe.example.com:8443", Some("acme/x")),
            Some("ghs_E"),
        ),
        (
            "443 is the https default",
            req("https", "github.com:443", Some("acme/x")),
            Some("ghs_W"),
        ),
        (
            "http is refused",
            req("http", "github.com", Some("acme/modules")),
            None,
        ),
        (
            "ssh is refused",
            req("ssh", "github.com", Some("acme/modules")),
            None,
        ),
        (
            "several tokens and no path",
            req("https", "github.com", None),
            None,
        ),
        (
            "one token for the host and no path",
            req("https", "ghe.example.com:8443", None),
            Some("ghs_E"),
        ),
        (
            "empty path counts as none",
            req("https", "ghe.example.com:8443", Some("")),
            Some("ghs_E"),
        ),
        (
            "other host",
            req("https", "gitlab.com", Some("acme/modules")),
            None,
        ),
    ];
    for (name, request, want) in cases {
        let got = select_token(&tokens, &request, NOW).map(|t| t.token.as_str());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn select_needs_protocol_and_host_and_respects_a_named_user() {
    let tokens = [tok("github.com", "acme", "ghs_W", None)];
    let mut no_protocol = req("https", "github.com", Some("acme/x"));
    no_protocol.protocol = None;
    let mut no_host = req("https", "github.com", Some("acme/x"));
    no_host.host = None;
    let mut other_user = req("https", "github.com", Some("acme/x"));
    other_user.username = some("alice");
    let mut our_user = req("https", "github.com", Some("acme/x"));
    our_user.username = some(GIT_TOKEN_USER);
    assert!(select_token(&tokens, &no_protocol, NOW).is_none());
    assert!(select_token(&tokens, &no_host, NOW).is_none());
    assert!(select_token(&tokens, &other_user, NOW).is_none());
    assert_eq!(
        select_token(&tokens, &our_user, NOW).unwrap().token,
        "ghs_W"
    );
}

#[test]
fn select_skips_expired_unusable_and_unsafe_tokens() {
    let mut expired = tok("github.com", "acme", "ghs_OLD", Some(&["acme/modules"]));
    expired.expires_at = "2030-01-01T00:00:00Z".to_owned(); // == NOW: already unusable
    let mut unknown_expiry = tok("github.com", "acme", "ghs_W", None);
    unknown_expiry.expires_at = "soon".to_owned();
    let tokens = [
        expired,
        tok("github.com", "acme", "", Some(&["acme/modules"])),
        tok(
            "github.com",
            "acme",
            "ghs_X\npassword=evil",
            Some(&["acme/modules"]),
        ),
        unknown_expiry,
    ];
    let got = select_token(
        &tokens,
        &req("https", "github.com", Some("acme/modules")),
        NOW,
    );
    assert_eq!(got.unwrap().token, "ghs_W");

    let only_expired = [tokens[0].clone()];
    assert!(select_token(&only_expired, &req("https", "github.com", None), NOW).is_none());
}

#[test]
fn get_response_carries_user_password_and_expiry() {
    let t = tok("github.com", "acme", "ghs_A", None);
    assert_eq!(
        format_get_response(&t),
        "username=x-access-token\npassword=ghs_A\npassword_expiry_utc=1893459600\n"
    );
    let mut no_expiry = t.clone();
    no_expiry.expires_at = String::new();
    assert_eq!(
        format_get_response(&no_expiry),
        "username=x-access-token\npassword=ghs_A\n"
    );
    let mut hostile = t;
    hostile.token = "ghs_A\nusername=evil".to_owned();
    assert_eq!(format_get_response(&hostile), "");
}

#[test]
fn get_response_round_trips_through_the_parser() {
    let t = tok("github.com", "acme", "ghs_A", None);
    let parsed = parse_request(&format_get_response(&t)).unwrap();
    assert_eq!(parsed.username.as_deref(), Some(GIT_TOKEN_USER));
    assert_eq!(parsed.password.as_deref(), Some("ghs_A"));
}

#[test]
fn erase_names_held_tokens_with_that_password_on_that_host() {
    let tokens = [
        tok("github.com", "acme", "ghs_A", None),
        tok("ghe.example.com", "acme", "ghs_A", None),
        tok("github.com", "beta", "ghs_B", None),
        tok("GitHub.com", "gamma", "ghs_A", None),
    ];
    let with = |protocol: &str, host: &str, password: Option<&str>| CredentialRequest {
        password: password.map(str::to_owned),
        ..req(protocol, host, Some("acme/x"))
    };
    assert_eq!(
        erase_matches(&tokens, &with("https", "github.com", Some("ghs_A"))),
        [0, 3]
    );
    assert_eq!(
        erase_matches(&tokens, &with("https", "github.com", Some("ghs_B"))),
        [2]
    );
    assert!(erase_matches(&tokens, &with("https", "github.com", Some("ghs_C"))).is_empty());
    assert!(erase_matches(&tokens, &with("https", "github.com", None)).is_empty());
    assert!(erase_matches(&tokens, &with("https", "github.com", Some(""))).is_empty());
    assert!(erase_matches(&tokens, &with("http", "github.com", Some("ghs_A"))).is_empty());
    assert!(erase_matches(&tokens, &with("https", "gitlab.com", Some("ghs_A"))).is_empty());
}

#[test]
fn operations_parse_and_unknown_ones_are_ignored() {
    assert_eq!(Operation::from_arg("get"), Some(Operation::Get));
    assert_eq!(Operation::from_arg("store"), Some(Operation::Store));
    assert_eq!(Operation::from_arg("erase"), Some(Operation::Erase));
    assert_eq!(Operation::from_arg("capability"), None);
    assert_eq!(Operation::from_arg("GET"), None);
}
