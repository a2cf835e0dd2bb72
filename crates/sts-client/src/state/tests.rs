//! The state cache: keys, freshness, privacy on disk and tolerance of damage.

use super::*;
use crate::model::tok;

fn token(expires_at: &str) -> ClientToken {
    ClientToken {
        id: Some("tok_1".into()),
        expires_at: expires_at.into(),
        installation_id: Some(serde_json::json!(1)),
        ..tok("github.com", "acme", "ghs_x", None)
    }
}

fn key() -> StateKey {
    StateKey::new(
        "http://b/",
        "acme",
        "default",
        &["b/x".into(), "a/y".into()],
    )
}

#[test]
fn keys_ignore_source_order_and_trailing_slashes() {
    let other = StateKey::new(
        "http://b",
        "acme",
        "default",
        &["a/y".into(), "b/x".into(), "a/y".into()],
    );
    assert_eq!(key(), other);
    assert_eq!(key().dir_name(), other.dir_name());
    let policy = StateKey::new("http://b", "acme", "deploy", &["a/y".into(), "b/x".into()]);
    assert_ne!(key().dir_name(), policy.dir_name());
    let workspace = StateKey::new("http://b", "beta", "default", &["a/y".into(), "b/x".into()]);
    assert_ne!(key().dir_name(), workspace.dir_name());
}

#[test]
fn freshness_follows_the_sixty_second_rule() {
    let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let at = |secs: i64| {
        (now + Duration::seconds(secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let cases: Vec<(Vec<ClientToken>, bool, &str)> = vec![
        (vec![], false, "no tokens"),
        (vec![token(&at(3600))], true, "an hour left"),
        (vec![token(&at(61))], true, "just over the skew"),
        (vec![token(&at(60))], false, "at the skew"),
        (
            vec![token(&at(3600)), token(&at(30))],
            false,
            "one about to die",
        ),
        (vec![token("not a time")], false, "unparseable expiry"),
        (
            vec![token("2099-01-01T00:00:00.000Z")],
            true,
            "fractional seconds parse",
        ),
        (
            vec![ClientToken {
                token: String::new(),
                ..token(&at(3600))
            }],
            false,
            "empty token",
        ),
    ];
    for (tokens, fresh, what) in cases {
        let state = State {
            tokens,
            ..State::new(key())
        };
        assert_eq!(state.tokens_are_fresh(now), fresh, "{what}");
    }
}

#[test]
fn sessions_are_renewed_five_minutes_early_and_exp_less_ones_never() {
    let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let session = |secs: Option<i64>| SavedSession {
        token: "s".into(),
        expires_at: secs.map(|s| now + Duration::seconds(s)),
    };
    assert!(session(Some(301)).is_fresh(now));
    assert!(!session(Some(300)).is_fresh(now));
    assert!(!session(Some(-10)).is_fresh(now));
    assert!(session(None).is_fresh(now));
}

#[cfg(unix)]
#[test]
fn saved_state_is_private_and_round_trips() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let dir = dir_for(&root.path().join("nested/root"), &key());
    let state = State {
        tokens: vec![token("2030-01-01T00:00:00Z")],
        ..State::new(key())
    };
    save(&dir, &state).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(STATE_FILE)), 0o600);
    let loaded = load(&dir, Some(&key())).unwrap();
    assert_eq!(loaded.tokens, state.tokens);
    // A state written for another key (a hash collision or a hand copy) is not used.
    let other = StateKey::new("http://other", "acme", "default", &[]);
    assert!(load(&dir, Some(&other)).is_none());
    assert_eq!(load_all(&root.path().join("nested/root")).len(), 1);
    remove(&dir).unwrap();
    remove(&dir).unwrap();
    assert!(load(&dir, None).is_none());
}

#[test]
fn damaged_state_is_ignored() {
    let root = tempfile::tempdir().unwrap();
    let dir = dir_for(root.path(), &key());
    create_private_dir(&dir).unwrap();
    for junk in [
        "",
        "{",
        "null",
        "{\"version\":1}",
        "{\"version\":99,\"key\":{}}",
        "\u{0}\u{1}",
    ] {
        std::fs::write(dir.join(STATE_FILE), junk).unwrap();
        assert!(load(&dir, Some(&key())).is_none(), "{junk:?}");
    }
}
