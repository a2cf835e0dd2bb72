//! Reading a token before its signature is checked: ONLY for issuer and `kid` lookup.
