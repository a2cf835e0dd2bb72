//! Sealing minted tokens for later revocation, and token fingerprints.
//!
//! GitHub has no revoke-by-id: revoking a token needs the token. So the broker keeps each minted
//! token sealed with AES-256-GCM under the configured key, bound to its token id, until it expires.
//!
//! Key rotation: the current key seals; previous keys (`[tokens] previous_encryption_key_files`)
//! still open what they sealed, until it has expired and the operator drops them.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use sha2::{Digest as _, Sha256};

/// Version tag of the sealed format, so the scheme can change without guessing.
const SEAL_PREFIX: &str = "v1.";
/// AES-GCM's standard nonce length; random nonces are safe at our volumes (far below 2^32 seals).
const NONCE_LEN: usize = 12;

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Not produced by `seal` (wrong prefix or encoding).
    #[error("sealed value is malformed")]
    Malformed,
    /// Wrong key (none of the current and previous keys), wrong token id, or tampered.
    #[error("sealed value does not open with any configured key")]
    Unauthentic,
}

/// Seals with the broker's current AEAD key; opens with it or a previous one.
pub struct Sealer {
    cipher: Aes256Gcm,
    /// Keys that sealed before the last rotation: they open, never seal.
    previous: Vec<Aes256Gcm>,
}

debug_showing!(Sealer {});

impl Sealer {
    /// From the 32-byte key.
    pub fn new(key: &SecretBox<[u8; 32]>) -> Self {
        Self::rotated(key, &[])
    }

    /// From the current key and the keys it replaced (tried in order when opening).
    pub fn rotated(key: &SecretBox<[u8; 32]>, previous: &[SecretBox<[u8; 32]>]) -> Self {
        let cipher = |key: &SecretBox<[u8; 32]>| Aes256Gcm::new(key.expose_secret().into());
        Self {
            cipher: cipher(key),
            previous: previous.iter().map(cipher).collect(),
        }
    }

    /// Seal `secret`, bound to `context` (the token id) so a sealed value cannot be moved to
    /// another row.
    pub fn seal(&self, context: &str, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        #[expect(
            clippy::expect_used,
            reason = "AES-GCM encryption of a short buffer cannot fail"
        )]
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("aes-gcm encrypt");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{SEAL_PREFIX}{}", STANDARD_NO_PAD.encode(out))
    }

    /// Whether `sealed` opens with the current key (not only with a previous one): what was
    /// sealed before a rotation must be sealed again before its key can be dropped.
    pub fn opens_with_current_key(&self, context: &str, sealed: &str) -> bool {
        Self {
            cipher: self.cipher.clone(),
            previous: Vec::new(),
        }
        .open(context, sealed)
        .is_ok()
    }

    /// Open a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<SecretString, SealError> {
        let body = sealed
            .strip_prefix(SEAL_PREFIX)
            .ok_or(SealError::Malformed)?;
        let raw = STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() <= NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let payload = || Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        // GCM's tag makes a wrong key fail cleanly, so trying each key in turn is safe.
        let plain = std::iter::once(&self.cipher)
            .chain(&self.previous)
            .find_map(|cipher| cipher.decrypt(&Nonce::from(nonce), payload()).ok())
            .ok_or(SealError::Unauthentic)?;
        let text = String::from_utf8(plain).map_err(|_| SealError::Malformed)?;
        Ok(SecretString::from(text))
    }
}

/// `sha256:<hex>` of a token: what the audit log and the token table keep instead of the token.
pub fn fingerprint(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// A random URL-safe string of `bytes` random bytes (hex), for ids and generated secrets.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&SecretBox::new(Box::new([byte; 32])))
    }

    #[test]
    fn a_sealed_token_opens_with_the_same_key_and_context() {
        let s = sealer(1);
        let sealed = s.seal("tok_1", "ghs_secret");
        assert!(!sealed.contains("ghs_secret"));
        assert_eq!(
            s.open("tok_1", &sealed).unwrap().expose_secret(),
            "ghs_secret"
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        assert_eq!(format!("{:?}", sealer(1)), "Sealer { .. }");
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let s = sealer(1);
        assert_ne!(s.seal("tok_1", "ghs_x"), s.seal("tok_1", "ghs_x"));
    }

    #[test]
    fn a_sealed_token_does_not_open_under_another_key_context_or_after_tampering() {
        let sealed = sealer(1).seal("tok_1", "ghs_secret");
        assert_eq!(
            sealer(2).open("tok_1", &sealed).unwrap_err(),
            SealError::Unauthentic
        );
        assert_eq!(
            sealer(1).open("tok_2", &sealed).unwrap_err(),
            SealError::Unauthentic
        );
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(sealer(1).open("tok_1", &tampered).is_err());
        assert_eq!(
            sealer(1).open("tok_1", "v2.abc").unwrap_err(),
            SealError::Malformed
        );
        assert_eq!(
            sealer(1).open("tok_1", "v1.").unwrap_err(),
            SealError::Malformed
        );
    }

    #[test]
    fn after_rotation_the_new_key_seals_and_the_previous_one_still_opens() {
        let key = |byte: u8| SecretBox::new(Box::new([byte; 32]));
        let before = sealer(1).seal("tok_1", "ghs_old");
        let rotated = Sealer::rotated(&key(2), &[key(1)]);
        assert_eq!(
            rotated.open("tok_1", &before).unwrap().expose_secret(),
            "ghs_old"
        );
        let after = rotated.seal("tok_2", "ghs_new");
        assert_eq!(
            sealer(2).open("tok_2", &after).unwrap().expose_secret(),
            "ghs_new",
            "sealed with the new key alone"
        );
        // The old key dropped: what it sealed is refused, clearly.
        assert_eq!(
            sealer(2).open("tok_1", &before).unwrap_err(),
            SealError::Unauthentic
        );
    }

    #[test]
    fn fingerprints_are_sha256_hex_with_a_prefix() {
        assert_eq!(
            fingerprint("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
