//! Which values from a broker may be written into git configuration, URLs, shell lines and
//! workflow commands. A broker is trusted to mint, not to write configuration: a quote, a
//! newline or a slash in a field could otherwise rewrite git's configuration (e.g. add
//! `core.sshCommand`) or smuggle a workflow command.

use crate::model::ClientToken;

/// The user name GitHub expects in front of an installation token.
pub(crate) const GIT_TOKEN_USER: &str = "x-access-token";

/// Characters a token may not hold besides control characters and white space (see
/// [`token_value_is_safe`]). GitHub tokens are `ghs_` + base62.
const TOKEN_FORBIDDEN_CHARS: &str = "@";

/// Characters allowed in an owner or repository name besides ASCII letters and digits (GitHub
/// logins and repository names use a subset of these).
const NAME_EXTRA_CHARS: &str = "-._";

/// Characters allowed in a host besides ASCII letters and digits: a port, an IPv6 literal.
const HOST_EXTRA_CHARS: &str = "-._:[]";

fn all_chars(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// The token value can go into a URL's userinfo, a config line, a shell line or a workflow
/// command: no control characters or whitespace (which would end a line or a word) and no `@`
/// (which would end the userinfo early and point git at a host the token names). Anything else a
/// broker sends is written as Atmos writes it (file mode escapes `"` and `\`).
pub(crate) fn token_value_is_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !TOKEN_FORBIDDEN_CHARS.contains(c))
}

fn host_is_safe(host: &str) -> bool {
    all_chars(host, HOST_EXTRA_CHARS)
}

pub(super) fn name_is_safe(name: &str) -> bool {
    all_chars(name, NAME_EXTRA_CHARS) && name != "." && name != ".."
}

/// Every field can be written into git configuration (empty fields are judged elsewhere).
pub(crate) fn fields_are_safe(t: &ClientToken) -> bool {
    (t.token.is_empty() || token_value_is_safe(&t.token))
        && host_is_safe(&t.host)
        && name_is_safe(&t.owner)
}

/// Tokens whose fields can be written anywhere; the others are dropped with a warning that names
/// the position only (a hostile field must not reach the terminal either).
pub(super) fn safe_tokens<'a>(
    tokens: &'a [ClientToken],
    warnings: &mut Vec<String>,
) -> Vec<&'a ClientToken> {
    let mut out = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if fields_are_safe(t) {
            out.push(t);
        } else {
            warnings.push(format!(
                "skipping token #{} from the broker: its host, owner or token holds characters \
                 that are unsafe in git configuration",
                i + 1
            ));
        }
    }
    out
}
