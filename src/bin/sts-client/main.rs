//! `sts-client`: trade a GitHub Actions OIDC token for least-privilege GitHub tokens through an
//! sts-broker, and hand them to git, Terraform and `gh`.

#[allow(dead_code)] // used as the client lands, module by module
mod model;

fn main() {}
