//! Verifier tests against the issuer simulator on loopback.

use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use sts_sim::keys::RsaKeyPair;
use sts_sim::oidc::{ActionsJob, JwksBody, OidcIssuerSimulator, RunningIssuer};

const AUDIENCE: &str = "sts.test";

struct Fixture {
    sim: OidcIssuerSimulator,
    running: RunningIssuer,
    verifier: OidcVerifier,
}

impl Fixture {
    async fn start() -> Self {
        let sim = OidcIssuerSimulator::new();
        let running = sim.start().await.unwrap();
        let verifier = OidcVerifier::new(vec![settings(&running.issuer)]).unwrap();
        Self {
            sim,
            running,
            verifier,
        }
    }

    /// A fresh verifier (empty cache) for the same issuer.
    fn new_verifier(&self) -> OidcVerifier {
        OidcVerifier::new(vec![settings(&self.running.issuer)]).unwrap()
    }

    fn claims(&self) -> Claims {
        self.sim.claims_for(&ActionsJob::default(), AUDIENCE)
    }

    /// Signs the default claims with the current key and verifies them; a refusal fails the test.
    /// The token, for the calls that follow.
    async fn verify_a_fresh_token(&self) -> String {
        let token = self.sim.sign(&self.claims());
        self.verifier.verify(&token).await.unwrap();
        token
    }

    fn header(&self, alg: Algorithm) -> Header {
        let mut header = Header::new(alg);
        header.kid = Some(self.sim.current_kid());
        header
    }
}

fn settings(issuer: &str) -> IssuerSettings {
    IssuerSettings {
        issuer: issuer.to_owned(),
        audiences: vec![AUDIENCE.to_owned()],
        jwks_url: None,
        allow_http: true,
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// How a case changes the simulator's claims before they are signed.
enum Edit {
    Set(&'static str, Value),
    Remove(&'static str),
}

#[tokio::test]
async fn claim_checks_accept_and_refuse_as_specified() {
    use Edit::{Remove, Set};
    let fx = Fixture::start().await;
    let cases: Vec<(&str, Option<Edit>, Result<(), VerifyError>)> = vec![
        ("a valid token is accepted", None, Ok(())),
        (
            "an expired token is refused",
            Some(Set("exp", json!(now() - 120))),
            Err(VerifyError::Expired),
        ),
        (
            "a token expired within the leeway is accepted",
            Some(Set("exp", json!(now() - 30))),
            Ok(()),
        ),
        (
            "a token whose nbf is in the future is refused",
            Some(Set("nbf", json!(now() + 120))),
            Err(VerifyError::NotYetValid),
        ),
        (
            "a token whose nbf is within the leeway is accepted",
            Some(Set("nbf", json!(now() + 30))),
            Ok(()),
        ),
        (
            "a token issued in the future is refused",
            Some(Set("iat", json!(now() + 120))),
            Err(VerifyError::IssuedInFuture),
        ),
        (
            "a token for another audience is refused",
            Some(Set("aud", json!("https://github.com/acme"))),
            Err(VerifyError::AudienceMismatch),
        ),
        (
            "an audience array containing ours is accepted",
            Some(Set("aud", json!(["https://github.com/acme", AUDIENCE]))),
            Ok(()),
        ),
        (
            "an audience array without ours is refused",
            Some(Set("aud", json!(["a", "b"]))),
            Err(VerifyError::AudienceMismatch),
        ),
        (
            "a token without exp is refused",
            Some(Remove("exp")),
            Err(VerifyError::MissingClaim("exp")),
        ),
        (
            "a token without aud is refused",
            Some(Remove("aud")),
            Err(VerifyError::MissingClaim("aud")),
        ),
        (
            "a token without sub is refused",
            Some(Remove("sub")),
            Err(VerifyError::MissingClaim("sub")),
        ),
        (
            "a token whose sub is not a string is refused",
            Some(Set("sub", json!(42))),
            Err(VerifyError::MissingClaim("sub")),
        ),
        (
            "a token without iat is refused",
            Some(Remove("iat")),
            Err(VerifyError::MissingClaim("iat")),
        ),
        (
            "a token whose exp is a string is refused",
            Some(Set("exp", json!("9999999999"))),
            Err(VerifyError::MissingClaim("exp")),
        ),
        (
            "a token without iss is refused",
            Some(Remove("iss")),
            Err(VerifyError::MissingClaim("iss")),
        ),
    ];
    for (name, edit, expected) in cases {
        let mut claims = fx.claims();
        match edit {
            Some(Set(claim, value)) => {
                claims.insert(claim.into(), value);
            }
            Some(Remove(claim)) => {
                claims.remove(claim);
            }
            None => {}
        }
        let outcome = fx.verifier.verify(&fx.sim.sign(&claims)).await.map(|_| ());
        assert_eq!(outcome, expected, "{name}");
    }
}

#[tokio::test]
async fn a_valid_token_yields_its_claims_expiry_and_jti() {
    let fx = Fixture::start().await;
    let claims = fx.claims();
    let verified = fx.verifier.verify(&fx.sim.sign(&claims)).await.unwrap();
    assert_eq!(verified.issuer, fx.running.issuer);
    assert_eq!(verified.claims, claims);
    assert_eq!(Some(verified.replay_key.as_str()), claims["jti"].as_str());
    assert_eq!(
        Some(verified.expires_at.unix_timestamp()),
        claims["exp"].as_i64()
    );
}

#[tokio::test]
async fn tokens_without_jti_get_a_replay_key_from_their_hash() {
    let fx = Fixture::start().await;
    let mut first = fx.claims();
    first.remove("jti");
    let mut second = first.clone();
    second.insert("run_id".into(), json!("43"));
    let mut empty = first.clone();
    empty.insert("jti".into(), json!(""));

    let mut keys = Vec::new();
    for claims in [first, second, empty] {
        let token = fx.sim.sign(&claims);
        let verified = fx.verifier.verify(&token).await.unwrap();
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
        assert_eq!(verified.replay_key, expected);
        keys.push(verified.replay_key);
    }
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_without_any_fetch() {
    let fx = Fixture::start().await;
    let cases = [
        format!("{}/other", fx.running.issuer),
        format!("{}/", fx.running.issuer),
        "https://token.actions.githubusercontent.com".to_owned(),
    ];
    for issuer in cases {
        let mut claims = fx.claims();
        claims.insert("iss".into(), json!(issuer));
        let outcome = fx.verifier.verify(&fx.sim.sign(&claims)).await;
        assert_eq!(outcome, Err(VerifyError::UnknownIssuer), "{issuer}");
    }
    assert_eq!(fx.sim.jwks_fetch_count(), 0);
    assert_eq!(fx.sim.discovery_fetch_count(), 0);
}

#[tokio::test]
async fn algorithms_other_than_rs256_are_refused_before_any_fetch() {
    let fx = Fixture::start().await;
    let claims = fx.claims();
    let public_pem = fx.sim.current_key().public_pem();
    let ec_key = {
        use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        let secret = <p256::SecretKey as p256::elliptic_curve::Generate>::generate();
        let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()
    };

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none with an empty signature",
            OidcIssuerSimulator::craft_token(
                &json!({"alg": "none", "typ": "JWT", "kid": fx.sim.current_kid()}),
                &claims,
                b"",
            ),
            "none",
        ),
        (
            "hs256 keyed with the rsa public key",
            fx.sim
                .sign_with_key(
                    fx.header(Algorithm::HS256),
                    &EncodingKey::from_secret(public_pem.as_bytes()).unwrap(),
                    &claims,
                )
                .unwrap(),
            "HS256",
        ),
        (
            "es256",
            fx.sim
                .sign_with_key(fx.header(Algorithm::ES256), &ec_key, &claims)
                .unwrap(),
            "ES256",
        ),
        (
            "rs512 with the right key",
            fx.sim
                .sign_with_header(fx.header(Algorithm::RS512), &claims)
                .unwrap(),
            "RS512",
        ),
        (
            "ps256 with the right key",
            fx.sim
                .sign_with_header(fx.header(Algorithm::PS256), &claims)
                .unwrap(),
            "PS256",
        ),
    ];
    for (name, token, alg) in cases {
        let outcome = fx.verifier.verify(&token).await;
        assert_eq!(
            outcome,
            Err(VerifyError::AlgorithmNotAllowed(alg.to_owned())),
            "{name}"
        );
    }
    assert_eq!(fx.sim.jwks_fetch_count(), 0);
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_the_right_kid_has_a_bad_signature() {
    let fx = Fixture::start().await;
    let claims = fx.claims();
    let impostor = RsaKeyPair::generate();
    let forged = fx
        .sim
        .sign_with_key(
            fx.header(Algorithm::RS256),
            &impostor.encoding_key(),
            &claims,
        )
        .unwrap();
    assert_eq!(
        fx.verifier.verify(&forged).await,
        Err(VerifyError::BadSignature)
    );

    // A genuine signature over other claims: swap the payload of a real token.
    let genuine = fx.sim.sign(&claims);
    let mut tampered_claims = claims.clone();
    tampered_claims.insert("repository_owner_id".into(), json!("6666"));
    let tampered_payload = fx.sim.sign(&tampered_claims);
    let parts: Vec<&str> = genuine.split('.').collect();
    let other: Vec<&str> = tampered_payload.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other[1], parts[2]);
    assert_eq!(
        fx.verifier.verify(&spliced).await,
        Err(VerifyError::BadSignature)
    );
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let fx = Fixture::start().await;
    let valid = fx.sim.sign(&fx.claims());
    let two_parts = valid
        .rsplit_once('.')
        .map(|(head, _)| head.to_owned())
        .unwrap();
    let cases = [
        ("empty", String::new()),
        ("garbage", "garbage".to_owned()),
        ("two parts", two_parts),
        ("non base64", "!!!.@@@.###".to_owned()),
        ("bearer prefix left on", format!("Bearer {valid}")),
        ("signature not base64", format!("{valid}!")),
    ];
    for (name, token) in cases {
        assert_eq!(
            fx.verifier.verify(&token).await,
            Err(VerifyError::Malformed),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refetch_then_waits_for_the_cooldown() {
    let fx = Fixture::start().await;
    fx.verify_a_fresh_token().await;
    assert_eq!(fx.sim.jwks_fetch_count(), 1);

    let stranger = RsaKeyPair::generate();
    let sign_with_kid = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        fx.sim
            .sign_with_key(header, &stranger.encoding_key(), &fx.claims())
            .unwrap()
    };

    let first = fx.verifier.verify(&sign_with_kid("unknown-1")).await;
    assert_eq!(first, Err(VerifyError::UnknownKey));
    assert_eq!(fx.sim.jwks_fetch_count(), 2);

    let second = fx.verifier.verify(&sign_with_kid("unknown-2")).await;
    assert_eq!(second, Err(VerifyError::UnknownKey));
    assert_eq!(fx.sim.jwks_fetch_count(), 2);

    // Known keys keep working from the cache.
    fx.verify_a_fresh_token().await;
    assert_eq!(fx.sim.jwks_fetch_count(), 2);
}

#[tokio::test]
async fn concurrent_verifications_share_one_fetch() {
    let fx = Fixture::start().await;
    let verifier = std::sync::Arc::new(fx.new_verifier());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let verifier = verifier.clone();
        let token = fx.sim.sign(&fx.claims());
        tasks.push(tokio::spawn(async move { verifier.verify(&token).await }));
    }
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(fx.sim.jwks_fetch_count(), 1);

    // A burst of unknown kids costs one refetch, not one each.
    let stranger = RsaKeyPair::generate();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let verifier = verifier.clone();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("burst-{n}"));
        let token = fx
            .sim
            .sign_with_key(header, &stranger.encoding_key(), &fx.claims())
            .unwrap();
        tasks.push(tokio::spawn(async move { verifier.verify(&token).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(VerifyError::UnknownKey));
    }
    assert_eq!(fx.sim.jwks_fetch_count(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_a_refetch_and_the_previous_key_still_works() {
    let fx = Fixture::start().await;
    let old_token = fx.verify_a_fresh_token().await;

    fx.sim.rotate_key();
    fx.verify_a_fresh_token().await;
    assert_eq!(fx.sim.jwks_fetch_count(), 2);
    fx.verify_a_fresh_token().await;
    assert_eq!(fx.sim.jwks_fetch_count(), 2);

    let mut claims = fx.claims();
    claims.insert("jti".into(), json!("old-key-again"));
    let old_key_again = fx
        .sim
        .sign_with_key(
            Header {
                kid: decode_kid(&old_token),
                ..Header::new(Algorithm::RS256)
            },
            &fx.sim.current_key().encoding_key(),
            &claims,
        )
        .unwrap();
    // Signed by the new key under the old kid: the old public key must not accept it.
    assert_eq!(
        fx.verifier.verify(&old_key_again).await,
        Err(VerifyError::BadSignature)
    );
    // The token signed before the rotation still verifies: the previous key stays published.
    fx.verifier.verify(&old_token).await.unwrap();
}

/// Turns a hang into a failure. Not a timing assertion: the verifications it guards finish
/// while the JWKS fetch is held at the issuer, which is never released before they return, so
/// only code that waits for the fetch can reach it.
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(30);

#[tokio::test]
async fn a_known_kid_is_served_from_stale_keys_while_the_refetch_is_held() {
    let fx = Fixture::start().await;
    fx.verify_a_fresh_token().await;
    assert_eq!(fx.sim.jwks_fetch_count(), 1);

    let hold = fx.sim.hold_jwks();
    fx.verifier.keys.expire(&fx.running.issuer);
    for _ in 0..3 {
        let token = fx.sim.sign(&fx.claims());
        let outcome = tokio::time::timeout(HANG_GUARD, fx.verifier.verify(&token)).await;
        let Ok(outcome) = outcome else {
            panic!("a verification with a cached kid waited for the held JWKS fetch");
        };
        outcome.unwrap();
        assert!(
            fx.verifier.keys.fetching(&fx.running.issuer),
            "the verification returned only once the refetch had ended"
        );
    }
    // The refetch was started in the background, once, and is still held at the issuer.
    hold.arrived().await;
    assert_eq!(fx.sim.jwks_fetch_count(), 2);

    // A kid the cache does not know waits for that fetch instead of starting another, and the
    // fetch (answered after the rotation) brings it.
    fx.sim.rotate_key();
    let rotated = fx.sim.sign(&fx.claims());
    let verifier = std::sync::Arc::new(fx.verifier);
    let waiting = tokio::spawn({
        let verifier = verifier.clone();
        async move { verifier.verify(&rotated).await }
    });
    hold.release();
    waiting.await.unwrap().unwrap();
    assert_eq!(fx.sim.jwks_fetch_count(), 2);
}

#[tokio::test]
async fn callers_without_keys_wait_for_the_one_fetch_in_flight() {
    let fx = Fixture::start().await;
    let verifier = std::sync::Arc::new(fx.new_verifier());
    let hold = fx.sim.hold_jwks();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let verifier = verifier.clone();
            let token = fx.sim.sign(&fx.claims());
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    hold.arrived().await;
    // Every caller has had its turn to start a fetch of its own; none did or gave up.
    for _ in 0..tasks.len() {
        tokio::task::yield_now().await;
    }
    assert_eq!(fx.sim.jwks_fetch_count(), 1);
    assert!(tasks.iter().all(|task| !task.is_finished()));
    hold.release();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(fx.sim.jwks_fetch_count(), 1);
}

#[tokio::test]
async fn stale_keys_keep_serving_while_the_issuer_fails_and_failures_back_off() {
    let fx = Fixture::start().await;
    fx.verify_a_fresh_token().await;

    fx.sim
        .set_jwks_override(Some(JwksBody::Raw("<html>down</html>".into())));
    fx.verifier.keys.expire(&fx.running.issuer);
    fx.verify_a_fresh_token().await;
    // A kid nobody publishes needs the keys, so it waits for the failing refetch (or finds it
    // failed moments ago) and reports the issuer unavailable rather than the kid unknown.
    let stranger = RsaKeyPair::generate();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("unpublished".into());
    let unknown = fx
        .sim
        .sign_with_key(header, &stranger.encoding_key(), &fx.claims())
        .unwrap();
    let outcome = fx.verifier.verify(&unknown).await;
    assert!(
        matches!(outcome, Err(VerifyError::JwksUnavailable(_))),
        "{outcome:?}"
    );
    assert_eq!(fx.sim.jwks_fetch_count(), 2);

    // Within the failure backoff, stale keys are served without another fetch.
    fx.verifier.keys.expire(&fx.running.issuer);
    fx.verify_a_fresh_token().await;
    assert_eq!(fx.sim.jwks_fetch_count(), 2);
}

fn decode_kid(token: &str) -> Option<String> {
    unverified::decode(token).unwrap().header.kid
}

#[tokio::test]
async fn a_token_without_kid_uses_the_only_key_and_fails_when_there_are_two() {
    let fx = Fixture::start().await;
    let claims = fx.claims();
    let no_kid = fx
        .sim
        .sign_with_header(Header::new(Algorithm::RS256), &claims)
        .unwrap();
    fx.verifier.verify(&no_kid).await.unwrap();

    fx.sim.rotate_key();
    let verifier = fx.new_verifier();
    let no_kid = fx
        .sim
        .sign_with_header(Header::new(Algorithm::RS256), &claims)
        .unwrap();
    assert_eq!(verifier.verify(&no_kid).await, Err(VerifyError::UnknownKey));
}

#[tokio::test]
async fn a_key_that_is_not_an_rs256_signing_key_is_refused() {
    let fx = Fixture::start().await;
    let token = fx.sim.sign(&fx.claims());
    let kid = fx.sim.current_kid();
    let rsa = fx.sim.current_key().public_jwk();
    let with = |field: &str, value: Value| {
        let mut jwk = rsa.clone();
        jwk[field] = value;
        json!({ "keys": [jwk] })
    };
    let cases = [
        (
            "ec key",
            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}),
        ),
        ("alg hs256", with("alg", json!("HS256"))),
        ("use enc", with("use", json!("enc"))),
        ("oct key", with("kty", json!("oct"))),
    ];
    for (name, jwks) in cases {
        fx.sim.set_jwks_override(Some(JwksBody::Json(jwks)));
        let verifier = fx.new_verifier();
        assert_eq!(
            verifier.verify(&token).await,
            Err(VerifyError::KeyTypeMismatch),
            "{name}"
        );
    }
}

#[tokio::test]
async fn unusable_jwks_bodies_make_keys_unavailable() {
    let fx = Fixture::start().await;
    let token = fx.sim.sign(&fx.claims());
    let oversized = format!(
        r#"{{"keys": {}, "padding": "{}"}}"#,
        fx.sim.jwks()["keys"],
        "x".repeat(MAX_FETCH_BYTES)
    );
    let cases = [
        ("a body over the cap", JwksBody::Raw(oversized)),
        ("not json", JwksBody::Raw("<html>hello</html>".into())),
        (
            "json without keys",
            JwksBody::Json(json!({"hello": "world"})),
        ),
    ];
    for (name, body) in cases {
        fx.sim.set_jwks_override(Some(body));
        let outcome = fx.new_verifier().verify(&token).await;
        assert!(
            matches!(outcome, Err(VerifyError::JwksUnavailable(_))),
            "{name}: {outcome:?}"
        );
    }

    // The same keys streamed in chunks under the cap are fine.
    fx.sim
        .set_jwks_override(Some(JwksBody::Raw(fx.sim.jwks().to_string())));
    fx.new_verifier().verify(&token).await.unwrap();
}

#[tokio::test]
async fn a_configured_jwks_url_skips_discovery_and_a_failing_one_is_unavailable() {
    let fx = Fixture::start().await;
    let token = fx.sim.sign(&fx.claims());
    let with_jwks_url = |path: &str| {
        let mut settings = settings(&fx.running.issuer);
        settings.jwks_url = Some(Url::parse(&format!("{}{path}", fx.running.issuer)).unwrap());
        OidcVerifier::new(vec![settings]).unwrap()
    };

    with_jwks_url("/.well-known/jwks")
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(fx.sim.discovery_fetch_count(), 0);
    assert_eq!(fx.sim.jwks_fetch_count(), 1);

    let outcome = with_jwks_url("/no-such-path").verify(&token).await;
    assert!(
        matches!(outcome, Err(VerifyError::JwksUnavailable(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn discovery_pointing_keys_at_another_host_is_refused() {
    let fx = Fixture::start().await;
    let token = fx.sim.sign(&fx.claims());
    let port = fx.running.addr.port();
    let cases = [
        format!("http://localhost:{port}/.well-known/jwks"),
        format!("http://127.0.0.2:{port}/.well-known/jwks"),
        format!("http://127.0.0.1:{}/.well-known/jwks", port.wrapping_add(1)),
        "https://evil.example/.well-known/jwks".to_owned(),
        "http://10.0.0.1/.well-known/jwks".to_owned(),
    ];
    for uri in cases {
        fx.sim.set_discovery_jwks_uri(Some(uri.clone()));
        let outcome = fx.new_verifier().verify(&token).await;
        assert!(
            matches!(outcome, Err(VerifyError::JwksUnavailable(_))),
            "{uri}: {outcome:?}"
        );
    }
    assert_eq!(fx.sim.jwks_fetch_count(), 0);
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let fx = Fixture::start().await;
    // Same server, spelled differently: its discovery document names 127.0.0.1, not localhost.
    let localhost = format!("http://localhost:{}", fx.running.addr.port());
    let verifier = OidcVerifier::new(vec![settings(&localhost)]).unwrap();
    let mut claims = fx.claims();
    claims.insert("iss".into(), json!(localhost));
    let outcome = verifier.verify(&fx.sim.sign(&claims)).await;
    assert!(
        matches!(outcome, Err(VerifyError::JwksUnavailable(_))),
        "{outcome:?}"
    );
    assert_eq!(fx.sim.jwks_fetch_count(), 0);
}

#[test]
fn new_enforces_the_url_rules_per_issuer() {
    let https = IssuerSettings {
        issuer: "https://token.actions.githubusercontent.com".into(),
        audiences: vec![AUDIENCE.into()],
        jwks_url: None,
        allow_http: false,
    };
    assert!(OidcVerifier::new(vec![https.clone()]).is_ok());
    assert!(OidcVerifier::new(vec![settings("http://127.0.0.1:9")]).is_ok());
    assert!(OidcVerifier::new(vec![settings("http://localhost:9")]).is_ok());
    assert!(OidcVerifier::new(vec![settings("http://[::1]:9")]).is_ok());

    let refused = [
        (
            "http on a public host",
            settings("http://token.example.com"),
        ),
        (
            "http on loopback without allow_http",
            IssuerSettings {
                allow_http: false,
                ..settings("http://127.0.0.1:9")
            },
        ),
        ("not a url", settings("token.example.com")),
        ("another scheme", settings("file:///etc/passwd")),
        (
            "an http jwks url on a public host",
            IssuerSettings {
                jwks_url: Some(Url::parse("http://keys.example.com/jwks").unwrap()),
                ..settings("http://127.0.0.1:9")
            },
        ),
        (
            "no audiences",
            IssuerSettings {
                audiences: vec![],
                ..https.clone()
            },
        ),
    ];
    for (name, settings) in refused {
        let issuer = settings.issuer.clone();
        let err = OidcVerifier::new(vec![settings]).err();
        let Some(err) = err else {
            panic!("{name}: accepted");
        };
        assert!(
            err.contains(&issuer),
            "{name}: error does not name the issuer: {err}"
        );
    }
    assert!(OidcVerifier::new(vec![https.clone(), https]).is_err());
}

#[test]
fn error_codes_are_stable_snake_case() {
    let errors = [
        VerifyError::Malformed,
        VerifyError::UnknownIssuer,
        VerifyError::AlgorithmNotAllowed("none".into()),
        VerifyError::UnknownKey,
        VerifyError::KeyTypeMismatch,
        VerifyError::BadSignature,
        VerifyError::Expired,
        VerifyError::NotYetValid,
        VerifyError::IssuedInFuture,
        VerifyError::AudienceMismatch,
        VerifyError::MissingClaim("exp"),
        VerifyError::JwksUnavailable("x".into()),
    ];
    let codes: std::collections::HashSet<&str> = errors.iter().map(VerifyError::code).collect();
    assert_eq!(codes.len(), errors.len());
    for code in codes {
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{code}"
        );
    }
}

/// An issuer that answers through redirects, serving the simulator's keys from its own origin.
async fn redirecting_issuer(sim: &OidcIssuerSimulator) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Path;
    use axum::response::Redirect;
    use axum::routing::get;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let jwks = sim.jwks();
    let doc_base = base.clone();
    let app = axum::Router::new()
        // One same-origin redirect to the document, one more to the keys.
        .route(
            "/ok/.well-known/openid-configuration",
            get(|| async { Redirect::temporary("/doc/ok") }),
        )
        // Three redirects in all: the most allowed.
        .route(
            "/three/.well-known/openid-configuration",
            get(|| async { Redirect::temporary("/hop/2/three") }),
        )
        // Four redirects: one too many.
        .route(
            "/four/.well-known/openid-configuration",
            get(|| async { Redirect::temporary("/hop/3/four") }),
        )
        .route(
            "/hop/{n}/{name}",
            get(|Path((n, name)): Path<(u8, String)>| async move {
                if n <= 1 {
                    Redirect::temporary(&format!("/doc/{name}"))
                } else {
                    Redirect::temporary(&format!("/hop/{}/{name}", n - 1))
                }
            }),
        )
        // Same path, other host: must not be followed.
        .route(
            "/cross/.well-known/openid-configuration",
            get(move || async move {
                Redirect::temporary(&format!("http://localhost:{port}/doc/cross"))
            }),
        )
        .route(
            "/doc/{name}",
            get(move |Path(name): Path<String>| {
                let base = doc_base.clone();
                async move {
                    axum::Json(json!({
                        "issuer": format!("{base}/{name}"),
                        "jwks_uri": format!("{base}/redirected-jwks"),
                    }))
                }
            }),
        )
        .route(
            "/redirected-jwks",
            get(|| async { Redirect::temporary("/keys") }),
        )
        .route("/keys", get(move || async move { axum::Json(jwks) }));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, server)
}

#[tokio::test]
async fn redirects_are_followed_only_on_the_same_origin_and_at_most_three_times() {
    let fx = Fixture::start().await;
    let (base, server) = redirecting_issuer(&fx.sim).await;
    let cases = [
        ("ok", true),
        ("three", true),
        ("four", false),
        ("cross", false),
    ];
    for (name, accepted) in cases {
        let issuer = format!("{base}/{name}");
        let mut claims = fx.claims();
        claims.insert("iss".into(), json!(issuer));
        let outcome = OidcVerifier::new(vec![settings(&issuer)])
            .unwrap()
            .verify(&fx.sim.sign(&claims))
            .await;
        if accepted {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        } else {
            assert!(
                matches!(outcome, Err(VerifyError::JwksUnavailable(_))),
                "{name}: {outcome:?}"
            );
        }
    }
    server.abort();
}

/// The issuer simulator's Actions token endpoint (`sts_sim::oidc`) hands out tokens this verifier
/// accepts, for the job it was told to impersonate and GitHub's default audience.
#[tokio::test]
async fn the_actions_endpoint_hands_out_verifiable_tokens_for_the_configured_job() {
    let sim = OidcIssuerSimulator::new();
    let running = sim.start().await.unwrap();
    sim.set_actions_job(ActionsJob {
        owner: "globex".into(),
        owner_id: "7".into(),
        ..ActionsJob::default()
    });
    let client = reqwest::Client::new();
    let fetch = |url: String| {
        let request = client
            .get(url)
            .bearer_auth(sim.actions_request_token())
            .send();
        async move {
            let body: Value = request.await.unwrap().json().await.unwrap();
            body["value"].as_str().unwrap().to_owned()
        }
    };

    let token = fetch(format!(
        "{}&audience=atmos-pro.com",
        sim.actions_token_url()
    ))
    .await;
    let verified = verifier_for(&running.issuer, "atmos-pro.com")
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(verified.claims["repository_owner"], json!("globex"));
    assert_eq!(verified.claims["repository_owner_id"], json!("7"));

    // Without `audience`, GitHub's default: the owner's URL.
    let token = fetch(sim.actions_token_url()).await;
    verifier_for(&running.issuer, "https://github.com/globex")
        .verify(&token)
        .await
        .unwrap();
}

fn verifier_for(issuer: &str, audience: &str) -> OidcVerifier {
    OidcVerifier::new(vec![IssuerSettings {
        issuer: issuer.to_owned(),
        audiences: vec![audience.to_owned()],
        jwks_url: None,
        allow_http: true,
    }])
    .unwrap()
}
