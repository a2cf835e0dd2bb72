//! The session signing key ring: the active key signs (its id in the JWT header's `kid`), every
//! kept key verifies the sessions it signed, and a rotation replaces the active key without
//! ending any session.
//!
//! Each replica holds the keys it last read from the store and reads them again (see
//! [`SIGNING_KEY_REFRESH`]) before signing or verifying with a ring older than that, so a
//! rotation or retirement made anywhere reaches every replica within it. A token naming a key the
//! replica does not know yet (signed by a replica that saw the rotation first) makes it read the
//! keys at once, at most once per [`UNKNOWN_KID_RELOAD_COOLDOWN`].
//!
//! Old keys leave the store through [`retire`], once no session they signed can be used any more
//! ([`SIGNING_KEY_RETENTION`]).

use super::{
    SessionClaims, SessionError, REVOKE_GRACE_SECONDS, SESSION_AUDIENCE, SESSION_LEEWAY_SECONDS,
};
use crate::config::MAX_SESSION_TTL_SECONDS;
use crate::crypto::Sealer;
use crate::store::{SigningKeyRecord, Store, StoreError, StoredSigningKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{jwk::Jwk, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use secrecy::ExposeSecret as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Sealing context of the signing keys (binds a sealed PEM to its purpose).
const KEY_SEAL_CONTEXT: &str = "session-signing-key";

/// How old a replica's ring may be when it signs or verifies; older, the keys are read again
/// first. A rotation (by any replica or `sts-broker session-key rotate`) makes every replica
/// sign with the new key within this, and a retired key stops verifying within it. It costs one
/// read of a table of a few rows per replica per period, and only while sessions are used.
pub const SIGNING_KEY_REFRESH: Duration = Duration::from_secs(30);

/// Least time between two reads of the keys caused by tokens naming a `kid` the ring does not
/// know. One read finds a key another replica rotated to; but anyone can send tokens with made-up
/// kids, and without this bound each of them would cost a database read. A genuine new kid met
/// within the cooldown is found by the next one, or by the refresh, within
/// [`SIGNING_KEY_REFRESH`].
pub const UNKNOWN_KID_RELOAD_COOLDOWN: Duration = Duration::from_secs(5);

/// How long a deactivated key is kept before [`retire`] may delete it: the last session it
/// signed was signed at most [`SIGNING_KEY_REFRESH`] after its deactivation (by a replica that
/// had not refreshed yet), lives at most [`MAX_SESSION_TTL_SECONDS`] (whatever the configured
/// lifetime was then), may still revoke for [`REVOKE_GRACE_SECONDS`] past its expiry, and
/// replicas allow [`SESSION_LEEWAY_SECONDS`] of clock skew. Past all of that, nothing it signed
/// is accepted anywhere, so deleting it ends no session.
pub const SIGNING_KEY_RETENTION: Duration = Duration::from_secs(
    SIGNING_KEY_REFRESH.as_secs()
        + MAX_SESSION_TTL_SECONDS
        + REVOKE_GRACE_SECONDS.unsigned_abs()
        + SESSION_LEEWAY_SECONDS,
);

/// One signing key, opened.
struct SigningKey {
    kid: String,
    /// The private key, parsed once. `jsonwebtoken::encode` parses its `EncodingKey` again on
    /// every call, and parsing a PKCS#8 key checks it by computing its public point, which costs
    /// about as much as the signature itself: measured, ~5 % of the broker's CPU per exchange.
    signer: EcdsaKeyPair,
    /// The JWS protected header (RFC 7515 §4: `alg` ES256, `typ` JWT, this key's `kid`),
    /// base64url-encoded once.
    header: String,
    decoding: DecodingKey,
    public_jwk: serde_json::Value,
}

impl SigningKey {
    fn open(record: &SigningKeyRecord, sealer: &Sealer) -> anyhow::Result<Self> {
        let pem = sealer
            .open(KEY_SEAL_CONTEXT, &record.private_key_sealed)
            .map_err(|e| {
                anyhow::anyhow!(
                    "session signing key {}: {e} (was tokens.encryption_key changed without \
                     listing the old key in tokens.previous_encryption_key_files?)",
                    record.kid
                )
            })?;
        let encoding = EncodingKey::from_ec_pem(pem.expose_secret().as_bytes())?;
        // The DER that `jsonwebtoken` would hand to aws-lc-rs itself, for the same algorithm.
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, encoding.as_bytes())
                .map_err(|e| anyhow::anyhow!("session signing key {}: {e}", record.kid))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(record.kid.clone());
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        let x = record.public_jwk["x"].as_str().unwrap_or_default();
        let y = record.public_jwk["y"].as_str().unwrap_or_default();
        let decoding = DecodingKey::from_ec_components(x, y)?;
        Ok(Self {
            kid: record.kid.clone(),
            signer,
            header,
            decoding,
            public_jwk: record.public_jwk.clone(),
        })
    }
}

/// The keys as read at one moment.
struct Ring {
    /// Every kept key, oldest first.
    keys: Vec<SigningKey>,
    /// Index of the active key in `keys`.
    active: usize,
    loaded: Instant,
}

/// What a ring says about a token.
enum Checked {
    Verified(Result<SessionClaims, SessionError>),
    /// The token names a key this ring does not hold.
    UnknownKid,
}

impl Ring {
    fn open(stored: &[StoredSigningKey], sealer: &Sealer) -> anyhow::Result<Self> {
        let keys = stored
            .iter()
            .map(|k| SigningKey::open(&k.record, sealer))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let active = stored
            .iter()
            .position(|k| k.active)
            .ok_or_else(|| anyhow::anyhow!("no active session signing key"))?;
        Ok(Self {
            keys,
            active,
            loaded: Instant::now(),
        })
    }

    fn active(&self) -> &SigningKey {
        &self.keys[self.active]
    }

    fn check(&self, token: &str, issuer: &str, allow_expired_for: Option<i64>) -> Checked {
        // Every session the broker signed names its key; a token without one is not ours.
        let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) else {
            return Checked::Verified(Err(SessionError::Invalid));
        };
        match self.keys.iter().find(|k| k.kid == kid) {
            Some(key) => {
                Checked::Verified(verify_with(&key.decoding, token, issuer, allow_expired_for))
            }
            None => Checked::UnknownKid,
        }
    }
}

/// Where a ring is read again from.
struct KeySource {
    store: Arc<dyn Store>,
    sealer: Sealer,
}

/// Signs and verifies session JWTs with the stored signing keys (see the module docs).
pub struct SessionKeys {
    issuer: String,
    ring: RwLock<Arc<Ring>>,
    /// `None`: a fixed ring, never read again (tests).
    source: Option<KeySource>,
    /// Held while reading the keys, so concurrent callers that need a fresh ring wait for one
    /// read instead of each making their own.
    reloading: tokio::sync::Mutex<()>,
    /// When a token with an unknown kid last made us read the keys.
    last_unknown_kid_reload: Mutex<Option<Instant>>,
    unknown_kid_cooldown: Duration,
    reloads: AtomicU64,
}

impl std::fmt::Debug for SessionKeys {
    // The private keys are credentials: only their ids are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self.ring();
        f.debug_struct("SessionKeys")
            .field("active", &ring.active().kid)
            .field(
                "kids",
                &ring.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// A fresh candidate key record (sealed private key + public JWK).
    pub fn generate_record(sealer: &Sealer) -> SigningKeyRecord {
        let secret = p256::SecretKey::generate();
        #[expect(
            clippy::expect_used,
            reason = "PKCS#8 encoding of a fresh P-256 key cannot fail"
        )]
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("pkcs8 pem");
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let mut jwk = EncodingKey::from_ec_pem(pem.as_bytes())
            .and_then(|key| Jwk::from_encoding_key(&key, Algorithm::ES256))
            .and_then(|jwk| Ok(serde_json::to_value(jwk)?))
            .unwrap_or_default();
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), kid.clone().into());
            obj.insert("alg".into(), "ES256".into());
            obj.insert("use".into(), "sig".into());
        }
        SigningKeyRecord {
            kid,
            algorithm: "ES256".to_owned(),
            private_key_sealed: sealer.seal(KEY_SEAL_CONTEXT, pem.as_str()),
            public_jwk: jwk,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    /// `record` sealed again under the current sealing key, when only a previous key (of a
    /// rotation) opens it; `None` when it needs nothing (or opens with no key at all, which
    /// loading reports).
    pub fn resealed(record: &SigningKeyRecord, sealer: &Sealer) -> Option<SigningKeyRecord> {
        if sealer.opens_with_current_key(KEY_SEAL_CONTEXT, &record.private_key_sealed) {
            return None;
        }
        let pem = sealer
            .open(KEY_SEAL_CONTEXT, &record.private_key_sealed)
            .ok()?;
        Some(SigningKeyRecord {
            private_key_sealed: sealer.seal(KEY_SEAL_CONTEXT, pem.expose_secret()),
            ..record.clone()
        })
    }

    /// The keys of `store`, creating the first one if there is none (two replicas starting at
    /// once agree on one). After a token-sealing-key rotation, every kept key is sealed again
    /// under the new sealing key, so the old one can be dropped once the tokens it sealed expired.
    pub async fn load(store: Arc<dyn Store>, sealer: Sealer, issuer: &str) -> anyhow::Result<Self> {
        store
            .load_or_store_signing_key(&Self::generate_record(&sealer))
            .await?;
        let mut keys = store.list_signing_keys().await?;
        for key in &mut keys {
            if let Some(resealed) = Self::resealed(&key.record, &sealer) {
                store.reseal_signing_key(&resealed).await?;
                tracing::info!(
                    kid = %key.record.kid,
                    "session signing key re-sealed under the current token-sealing key"
                );
                key.record = resealed;
            }
        }
        let ring = Ring::open(&keys, &sealer)?;
        Ok(Self::with_ring(
            ring,
            issuer,
            Some(KeySource { store, sealer }),
        ))
    }

    /// A fixed ring of `keys`, never read again: for tests, and tools that only sign or verify.
    pub fn fixed(keys: &[StoredSigningKey], sealer: &Sealer, issuer: &str) -> anyhow::Result<Self> {
        Ok(Self::with_ring(Ring::open(keys, sealer)?, issuer, None))
    }

    fn with_ring(ring: Ring, issuer: &str, source: Option<KeySource>) -> Self {
        Self {
            issuer: issuer.to_owned(),
            ring: RwLock::new(Arc::new(ring)),
            source,
            reloading: tokio::sync::Mutex::new(()),
            last_unknown_kid_reload: Mutex::new(None),
            unknown_kid_cooldown: UNKNOWN_KID_RELOAD_COOLDOWN,
            reloads: AtomicU64::new(0),
        }
    }

    /// This ring with another cooldown between unknown-kid reloads (tests).
    pub fn with_unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.unknown_kid_cooldown = cooldown;
        self
    }

    fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The issuer (`iss`) of sessions.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The id of the key that signs.
    pub fn active_kid(&self) -> String {
        self.ring().active().kid.clone()
    }

    /// How many times the keys were read again since this ring was built.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// `{"keys": [...]}` for `/.well-known/jwks.json`: every kept key, oldest first, so clients
    /// can verify sessions signed before a rotation.
    pub fn jwks(&self) -> serde_json::Value {
        let ring = self.ring();
        let keys: Vec<_> = ring.keys.iter().map(|k| k.public_jwk.clone()).collect();
        serde_json::json!({ "keys": keys })
    }

    /// Sign a session JWT with the active key (its id in the header's `kid`). Call
    /// [`refresh_if_stale`](Self::refresh_if_stale) first, so a rotation made elsewhere is
    /// followed.
    ///
    /// The compact serialization of RFC 7515 §7.1, as `jsonwebtoken::encode` builds it, with the
    /// key parsed once (see [`SigningKey::signer`]): header, claims and the fixed-width `r || s`
    /// signature that RFC 7518 §3.4 asks of ES256, each base64url-encoded without padding.
    /// `verify` reads these tokens with `jsonwebtoken::decode`.
    pub fn sign(&self, claims: &SessionClaims) -> anyhow::Result<String> {
        let ring = self.ring();
        let key = ring.active();
        let mut jwt = key.header.clone();
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims)?, &mut jwt);
        let signature = key
            .signer
            .sign(&SystemRandom::new(), jwt.as_bytes())
            .map_err(|e| anyhow::anyhow!("ES256 signing failed: {e}"))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jwt);
        Ok(jwt)
    }

    /// Verify signature (with the key the token's `kid` names), issuer and audience. With
    /// `allow_expired_for` set, a token up to that many seconds past `exp` is still accepted
    /// (for revoke-only calls). A kid this ring does not know makes it read the keys once more
    /// (at most once per cooldown) before refusing.
    pub async fn verify(
        &self,
        token: &str,
        allow_expired_for: Option<i64>,
    ) -> Result<SessionClaims, SessionError> {
        self.refresh_if_stale().await?;
        let check = |ring: &Ring| ring.check(token, &self.issuer, allow_expired_for);
        if let Checked::Verified(result) = check(&self.ring()) {
            return result;
        }
        if self.source.is_none() {
            return Err(SessionError::Invalid);
        }
        let _reading = self.reloading.lock().await;
        // Another caller may have read the keys while we waited.
        if let Checked::Verified(result) = check(&self.ring()) {
            return result;
        }
        {
            let mut last = self
                .last_unknown_kid_reload
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < self.unknown_kid_cooldown) {
                return Err(SessionError::Invalid);
            }
            *last = Some(Instant::now());
        }
        self.reload().await?;
        match check(&self.ring()) {
            Checked::Verified(result) => result,
            Checked::UnknownKid => Err(SessionError::Invalid),
        }
    }

    /// Read the keys again if this ring is older than [`SIGNING_KEY_REFRESH`].
    pub async fn refresh_if_stale(&self) -> Result<(), SessionError> {
        let stale = || self.ring().loaded.elapsed() >= SIGNING_KEY_REFRESH;
        if self.source.is_none() || !stale() {
            return Ok(());
        }
        let _reading = self.reloading.lock().await;
        if stale() {
            self.reload().await?;
        }
        Ok(())
    }

    /// Read the keys again now (what [`refresh_if_stale`](Self::refresh_if_stale) does once
    /// the ring is old enough). A fixed ring stays as it is.
    pub async fn refresh(&self) -> Result<(), SessionError> {
        let _reading = self.reloading.lock().await;
        self.reload().await
    }

    /// Read the keys from the store and put them in place of the ring. Callers hold
    /// `reloading`.
    async fn reload(&self) -> Result<(), SessionError> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let stored = source.store.list_signing_keys().await?;
        // A kept key that does not open is a sealing-key misconfiguration: refusing (rather
        // than dropping the key from the ring) keeps it visible.
        let ring = Ring::open(&stored, &source.sealer)
            .map_err(|e| StoreError::Corrupt(format!("{e:#}")))?;
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Verify `token` with `key`: signature, issuer, audience, expiry (see [`SessionKeys::verify`]).
fn verify_with(
    key: &DecodingKey,
    token: &str,
    issuer: &str,
    allow_expired_for: Option<i64>,
) -> Result<SessionClaims, SessionError> {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[SESSION_AUDIENCE]);
    validation.leeway = SESSION_LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    if allow_expired_for.is_some() {
        validation.validate_exp = false;
    }
    let data =
        jsonwebtoken::decode::<SessionClaims>(token, key, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => SessionError::Expired,
                _ => SessionError::Invalid,
            }
        })?;
    if let Some(grace) = allow_expired_for {
        if data.claims.exp + grace < OffsetDateTime::now_utc().unix_timestamp() {
            return Err(SessionError::Expired);
        }
    }
    Ok(data.claims)
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new active key.
    pub kid: String,
    /// The key it replaced (it keeps verifying until retired).
    pub previous: Option<String>,
}

/// Rotate: a new key, sealed with `sealer`, becomes the active one at `now`; the previous one
/// only verifies from then on. Replicas sign with the new key within [`SIGNING_KEY_REFRESH`].
pub async fn rotate(
    store: &dyn Store,
    sealer: &Sealer,
    now: OffsetDateTime,
) -> Result<Rotated, StoreError> {
    let new = SessionKeys::generate_record(sealer);
    let previous = store.rotate_signing_key(&new, now).await?;
    Ok(Rotated {
        kid: new.kid,
        previous,
    })
}

/// Delete the keys deactivated more than `keep` before `now` ([`SIGNING_KEY_RETENTION`] unless
/// every session they signed is to end at once); never the active key. Returns the deleted kids.
pub async fn retire(
    store: &dyn Store,
    now: OffsetDateTime,
    keep: Duration,
) -> Result<Vec<String>, StoreError> {
    store.purge_signing_keys(now - keep).await
}
