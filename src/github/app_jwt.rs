//! App JWTs (RS256, `iat` = now - 60 s, `exp` <= 10 min), reused until near expiry.
