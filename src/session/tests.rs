use super::keys::{retire, rotate, SIGNING_KEY_RETENTION};
use super::*;
use crate::crypto::Sealer;
use crate::store::{SigningKeyRecord, StoredSigningKey};
use secrecy::SecretBox;
use std::sync::Arc;
use std::time::Duration;

const ISSUER: &str = "http://broker";

fn sealer() -> Sealer {
    Sealer::new(&SecretBox::new(Box::new([3u8; 32])))
}

fn active(record: &SigningKeyRecord) -> StoredSigningKey {
    StoredSigningKey {
        record: record.clone(),
        active: true,
        deactivated_at: None,
    }
}

fn keys() -> (SessionKeys, Sealer) {
    let sealer = sealer();
    let record = SessionKeys::generate_record(&sealer);
    (
        SessionKeys::fixed(&[active(&record)], &sealer, ISSUER).unwrap(),
        sealer,
    )
}

fn claims(exp_in: i64) -> SessionClaims {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    SessionClaims {
        iss: ISSUER.into(),
        aud: SESSION_AUDIENCE.into(),
        sub: "repo:acme/infra:ref:refs/heads/main".into(),
        sid: "s1".into(),
        jti: "s1".into(),
        ws: "acme".into(),
        typ: SessionType::GitHubActions,
        iat: now,
        nbf: now,
        exp: now + exp_in,
    }
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// A store of its own (in memory) and the ring loaded from it.
async fn stored_ring() -> (Arc<dyn Store>, SessionKeys) {
    let store = crate::store::connect("sqlite::memory:", 1).await.unwrap();
    let ring = SessionKeys::load(Arc::clone(&store), sealer(), ISSUER)
        .await
        .unwrap();
    (store, ring)
}

#[tokio::test]
async fn a_signed_session_verifies_and_round_trips() {
    let (k, _) = keys();
    let c = claims(600);
    let token = k.sign(&c).unwrap();
    assert_eq!(kid_of(&token), k.active_kid());
    assert_eq!(k.verify(&token, None).await.unwrap(), c);
}

#[tokio::test]
async fn an_expired_session_is_refused_unless_revoking_within_the_grace() {
    let (k, _) = keys();
    let token = k.sign(&claims(-600)).unwrap();
    assert!(matches!(
        k.verify(&token, None).await.unwrap_err(),
        SessionError::Expired
    ));
    assert!(k.verify(&token, Some(REVOKE_GRACE_SECONDS)).await.is_ok());
    let old = k.sign(&claims(-REVOKE_GRACE_SECONDS - 60)).unwrap();
    assert!(matches!(
        k.verify(&old, Some(REVOKE_GRACE_SECONDS))
            .await
            .unwrap_err(),
        SessionError::Expired
    ));
}

#[tokio::test]
async fn a_session_from_another_key_or_issuer_is_refused() {
    let (k1, _) = keys();
    let (k2, _) = keys();
    let token = k2.sign(&claims(600)).unwrap();
    assert!(matches!(
        k1.verify(&token, None).await.unwrap_err(),
        SessionError::Invalid
    ));
    let mut c = claims(600);
    c.iss = "http://other".into();
    assert!(matches!(
        k1.verify(&k1.sign(&c).unwrap(), None).await.unwrap_err(),
        SessionError::Invalid
    ));
}

#[test]
fn debug_shows_the_key_ids_and_no_key_material() {
    let (k, _) = keys();
    let kid = k.active_kid();
    assert_eq!(
        format!("{k:?}"),
        format!("SessionKeys {{ active: {kid:?}, kids: [{kid:?}], .. }}")
    );
}

#[test]
fn a_signing_key_sealed_before_a_rotation_is_resealed_under_the_new_key() {
    let key = |byte: u8| SecretBox::new(Box::new([byte; 32]));
    let old = Sealer::new(&key(1));
    let record = SessionKeys::generate_record(&old);
    assert!(SessionKeys::resealed(&record, &old).is_none());
    let rotated = Sealer::rotated(&key(2), &[key(1)]);
    let resealed = SessionKeys::resealed(&record, &rotated).unwrap();
    assert_eq!(resealed.kid, record.kid);
    // Once resealed, the new key alone opens it: the old one can go.
    let new_only = Sealer::new(&key(2));
    assert!(SessionKeys::fixed(&[active(&resealed)], &new_only, "x").is_ok());
    let err = SessionKeys::fixed(&[active(&record)], &new_only, "x").unwrap_err();
    assert!(
        err.to_string().contains("previous_encryption_key_files"),
        "{err}"
    );
}

#[test]
fn session_types_keep_their_wire_names() {
    assert_eq!(
        serde_json::to_value(SessionType::GitHubActions).unwrap(),
        "ws:gh:action"
    );
    assert_eq!(serde_json::to_value(SessionType::Oidc).unwrap(), "ws:oidc");
}

#[test]
fn the_stored_key_reloads_only_with_the_same_sealing_key() {
    let sealer = sealer();
    let record = SessionKeys::generate_record(&sealer);
    let other = Sealer::new(&SecretBox::new(Box::new([4u8; 32])));
    assert!(SessionKeys::fixed(&[active(&record)], &other, "x").is_err());
    let jwks = SessionKeys::fixed(&[active(&record)], &sealer, "x")
        .unwrap()
        .jwks();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert_eq!(jwks["keys"][0]["kid"], record.kid.as_str());
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "private part must not be published"
    );
}

#[tokio::test]
async fn after_a_rotation_the_new_key_signs_and_the_old_kid_still_verifies() {
    let (store, ring) = stored_ring().await;
    let old_kid = ring.active_kid();
    let before = ring.sign(&claims(600)).unwrap();

    let rotated = rotate(&*store, &sealer(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(rotated.previous.as_deref(), Some(old_kid.as_str()));
    ring.refresh().await.unwrap();

    let after = ring.sign(&claims(600)).unwrap();
    assert_eq!(kid_of(&after), rotated.kid);
    assert_ne!(rotated.kid, old_kid);
    assert_eq!(ring.verify(&after, None).await.unwrap().sid, "s1");
    assert_eq!(kid_of(&before), old_kid);
    assert_eq!(ring.verify(&before, None).await.unwrap().sid, "s1");
    let published: Vec<_> = ring.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(published, [old_kid, rotated.kid]);
}

#[tokio::test]
async fn a_kid_this_replica_does_not_know_yet_is_found_by_one_reload() {
    let (store, replica_a) = stored_ring().await;
    let replica_b = SessionKeys::load(Arc::clone(&store), sealer(), ISSUER)
        .await
        .unwrap();
    rotate(&*store, &sealer(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    replica_a.refresh().await.unwrap();
    let token = replica_a.sign(&claims(600)).unwrap();

    let reloads = replica_b.reloads();
    assert_eq!(replica_b.verify(&token, None).await.unwrap().sid, "s1");
    assert_eq!(replica_b.reloads(), reloads + 1);
    // B now signs with the new key too.
    assert_eq!(replica_b.active_kid(), kid_of(&token));
}

#[tokio::test]
async fn unknown_kids_are_refused_and_reload_the_keys_at_most_once_per_cooldown() {
    let (_store, ring) = stored_ring().await;
    let (stranger, _) = keys();
    let reloads = ring.reloads();
    for _ in 0..5 {
        let token = stranger.sign(&claims(600)).unwrap();
        assert!(matches!(
            ring.verify(&token, None).await.unwrap_err(),
            SessionError::Invalid
        ));
    }
    assert_eq!(ring.reloads(), reloads + 1, "one reload per cooldown");

    // Without a cooldown, every unknown kid would cost a read: the bound is what holds it.
    let ring = ring.with_unknown_kid_cooldown(Duration::ZERO);
    let token = stranger.sign(&claims(600)).unwrap();
    for _ in 0..3 {
        assert!(ring.verify(&token, None).await.is_err());
    }
    assert_eq!(ring.reloads(), reloads + 4);
}

#[tokio::test]
async fn a_token_naming_an_old_kid_but_signed_by_another_key_is_refused() {
    let (store, ring) = stored_ring().await;
    let old_kid = ring.active_kid();
    rotate(&*store, &sealer(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    ring.refresh().await.unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(old_kid);
    let forged = forged(&header);

    let reloads = ring.reloads();
    assert!(matches!(
        ring.verify(&forged, None).await.unwrap_err(),
        SessionError::Invalid
    ));
    assert_eq!(ring.reloads(), reloads, "a known kid costs no read");
}

/// A token with `header`, signed by a key of its own.
fn forged(header: &jsonwebtoken::Header) -> String {
    use p256::elliptic_curve::Generate as _;
    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
    let pem = p256::SecretKey::generate()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(header, &claims(600), &key).unwrap()
}

#[tokio::test]
async fn a_retired_key_stops_verifying_and_the_active_key_is_never_retired() {
    let (store, ring) = stored_ring().await;
    let before = ring.sign(&claims(600)).unwrap();
    let old_kid = ring.active_kid();
    let rotated = rotate(&*store, &sealer(), OffsetDateTime::now_utc())
        .await
        .unwrap();

    // Within the retention nothing goes.
    let now = OffsetDateTime::now_utc();
    assert!(retire(&*store, now, SIGNING_KEY_RETENTION)
        .await
        .unwrap()
        .is_empty());
    let retired = retire(&*store, now + Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(retired, [old_kid]);
    ring.refresh().await.unwrap();

    assert!(matches!(
        ring.verify(&before, None).await.unwrap_err(),
        SessionError::Invalid
    ));
    assert_eq!(ring.active_kid(), rotated.kid);
    assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);
}

#[test]
fn the_retention_outlasts_every_session_a_deactivated_key_can_have_signed() {
    let longest_use = crate::config::MAX_SESSION_TTL_SECONDS
        + REVOKE_GRACE_SECONDS.unsigned_abs()
        + SESSION_LEEWAY_SECONDS;
    assert!(SIGNING_KEY_RETENTION.as_secs() > longest_use);
    assert!(
        SIGNING_KEY_RETENTION.as_secs() >= longest_use + super::keys::SIGNING_KEY_REFRESH.as_secs()
    );
}
