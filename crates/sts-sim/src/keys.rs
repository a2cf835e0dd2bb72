//! RSA key pairs for the simulators (the App key, the OIDC issuer key).
//!
//! NOT SECURE FOR PRODUCTION USE: these keys live for one process and exist so that the demo,
//! dev mode and tests sign real RS256 JWTs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use secrecy::SecretString;

/// Key size of generated keys: GitHub's App keys and its OIDC keys are 2048-bit RSA.
pub const RSA_BITS: usize = 2048;

/// A freshly generated RSA key pair.
#[derive(Clone)]
pub struct RsaKeyPair {
    private: RsaPrivateKey,
    /// `kid` to publish with the public key.
    pub kid: String,
}

debug_showing!(RsaKeyPair { kid });

/// A PEM encoding of the private key, kept secret: encoding a valid key cannot fail, whichever
/// format it is.
fn private_pem<E: std::fmt::Debug>(
    pem: Result<impl std::ops::Deref<Target = String>, E>,
) -> SecretString {
    #[expect(clippy::expect_used, reason = "encoding a valid key cannot fail")]
    SecretString::from(pem.expect("private key pem").to_string())
}

impl RsaKeyPair {
    /// Generate a new 2048-bit key.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        #[expect(
            clippy::expect_used,
            reason = "key generation with a working OS rng cannot fail"
        )]
        let private = RsaPrivateKey::new(&mut rng, RSA_BITS).expect("rsa key generation");
        let kid = uuid::Uuid::new_v4().simple().to_string();
        Self { private, kid }
    }

    /// The public half.
    pub fn public_key(&self) -> RsaPublicKey {
        self.private.to_public_key()
    }

    /// PKCS#8 PEM of the private key.
    pub fn private_pkcs8_pem(&self) -> SecretString {
        private_pem(self.private.to_pkcs8_pem(LineEnding::LF))
    }

    /// PKCS#1 PEM of the private key (`BEGIN RSA PRIVATE KEY`, what GitHub hands out).
    pub fn private_pkcs1_pem(&self) -> SecretString {
        private_pem(self.private.to_pkcs1_pem(LineEnding::LF))
    }

    /// SPKI PEM of the public key.
    pub fn public_pem(&self) -> String {
        #[expect(clippy::expect_used, reason = "encoding a valid key cannot fail")]
        self.public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("spki pem")
    }

    /// `jsonwebtoken` signing key.
    pub fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        use secrecy::ExposeSecret as _;
        #[expect(clippy::expect_used, reason = "our own pkcs1 pem always parses")]
        jsonwebtoken::EncodingKey::from_rsa_pem(self.private_pkcs1_pem().expose_secret().as_bytes())
            .expect("rsa pem")
    }

    /// `jsonwebtoken` verification key.
    pub fn decoding_key(&self) -> jsonwebtoken::DecodingKey {
        let public = self.public_key();
        #[expect(clippy::expect_used, reason = "our own key components always parse")]
        jsonwebtoken::DecodingKey::from_rsa_components(
            &URL_SAFE_NO_PAD.encode(public.n().to_be_bytes_trimmed_vartime()),
            &URL_SAFE_NO_PAD.encode(public.e().to_be_bytes_trimmed_vartime()),
        )
        .expect("rsa components")
    }

    /// The public key as a JWK (`kty RSA`, `alg RS256`, `use sig`).
    pub fn public_jwk(&self) -> serde_json::Value {
        let public = self.public_key();
        serde_json::json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_be_bytes_trimmed_vartime()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_be_bytes_trimmed_vartime()),
        })
    }
}
