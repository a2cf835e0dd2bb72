//! JWKS fetching and caching per issuer.

/// Cached JWKS of the configured issuers.
pub struct JwksCache {}
