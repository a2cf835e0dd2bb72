//! The CGI side: a request handed to `git http-backend` (RFC 3875), and its answer streamed
//! back with the status and headers the backend chose.

use super::access::Refusal;
use super::repos::isolated_git;
use super::GitServer;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use std::process::Stdio;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

/// Largest CGI response head (`Status:` and headers) read from `git http-backend`: a broken
/// backend must not make the server buffer without bound.
pub const MAX_CGI_HEAD_BYTES: usize = 64 * 1024;
/// How much of `git http-backend`'s stderr is kept for the log.
const MAX_CGI_STDERR_BYTES: u64 = 16 * 1024;
/// Size of the chunks the backend's output is streamed in.
const BODY_CHUNK_BYTES: usize = 16 * 1024;

/// What the CGI backend is told about one request.
pub(super) struct CgiRequest {
    pub(super) method: Method,
    pub(super) path_info: String,
    pub(super) query: String,
    pub(super) content_type: Option<String>,
    pub(super) content_encoding: Option<String>,
    pub(super) git_protocol: Option<String>,
    pub(super) remote_user: Option<&'static str>,
    pub(super) body: Bytes,
}

impl GitServer {
    /// Run `git http-backend` for `cgi` and stream its answer.
    pub(super) async fn run_backend(&self, cgi: CgiRequest) -> Result<Response, Refusal> {
        let mut command = isolated_git(&self.root);
        command
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", &cgi.path_info)
            .env("REQUEST_METHOD", cgi.method.as_str())
            .env("QUERY_STRING", &cgi.query)
            // The server listens on loopback only.
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if cgi.method == Method::POST {
            command.env("CONTENT_LENGTH", cgi.body.len().to_string());
        }
        if let Some(content_type) = &cgi.content_type {
            command.env("CONTENT_TYPE", content_type);
        }
        if let Some(encoding) = &cgi.content_encoding {
            // `git http-backend` inflates gzip request bodies itself.
            command.env("HTTP_CONTENT_ENCODING", encoding);
        }
        if let Some(protocol) = &cgi.git_protocol {
            command.env("HTTP_GIT_PROTOCOL", protocol);
        }
        if let Some(user) = cgi.remote_user {
            command.env("REMOTE_USER", user);
        }
        let backend_failed = |error: std::io::Error| {
            tracing::warn!(error = %error, "git http-backend could not run");
            Refusal::Backend(StatusCode::INTERNAL_SERVER_ERROR)
        };
        let mut child = command.spawn().map_err(backend_failed)?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(backend_failed(std::io::Error::other("missing pipes")));
        };
        let body = cgi.body;
        tokio::spawn(async move {
            // The backend may stop reading early (on error); it reports that on stdout/stderr.
            let _ = stdin.write_all(&body).await;
        });
        let path_info = cgi.path_info;
        tokio::spawn(async move {
            let mut log = Vec::new();
            let mut stderr = stderr;
            let (status, _) = tokio::join!(child.wait(), async {
                let _ = (&mut stderr)
                    .take(MAX_CGI_STDERR_BYTES)
                    .read_to_end(&mut log)
                    .await;
                // Keep draining so the backend never blocks on a full pipe.
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            });
            let failed = !status.as_ref().is_ok_and(std::process::ExitStatus::success);
            if failed || !log.is_empty() {
                tracing::debug!(
                    path = %path_info,
                    status = ?status,
                    stderr = %String::from_utf8_lossy(&log),
                    "git http-backend finished"
                );
            }
        });
        let mut reader = tokio::io::BufReader::with_capacity(BODY_CHUNK_BYTES, stdout);
        let head = read_cgi_head(&mut reader).await;
        let (status, headers) = head
            .and_then(|head| parse_cgi_head(&head))
            .map_err(|error| {
                tracing::warn!(error = %error, "git http-backend answered nonsense");
                Refusal::Backend(StatusCode::BAD_GATEWAY)
            })?;
        let mut response = Response::new(Body::from_stream(body_stream(reader)));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// `Git-Protocol` values are `key=value` pairs joined by `:`; anything else is not passed on.
pub(super) fn is_safe_git_protocol(value: &str) -> bool {
    value.len() <= 256
        && value.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'=' | b':' | b'.' | b'_' | b'-')
        })
}

/// Why a CGI response head could not be used.
#[derive(Debug, thiserror::Error)]
enum CgiError {
    #[error("reading the cgi response: {0}")]
    Io(#[from] std::io::Error),
    #[error("the cgi response ended before its head did")]
    Truncated,
    #[error("the cgi response head is longer than {MAX_CGI_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("malformed cgi response head: {0}")]
    Malformed(&'static str),
}

/// Read the CGI response head, up to and without the blank line that ends it.
async fn read_cgi_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, CgiError> {
    let mut head = Vec::new();
    loop {
        let remaining = MAX_CGI_HEAD_BYTES.saturating_sub(head.len());
        if remaining == 0 {
            return Err(CgiError::TooLarge);
        }
        let mut line = Vec::new();
        let limit = u64::try_from(remaining).unwrap_or(u64::MAX);
        let read = (&mut *reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Err(CgiError::Truncated);
        }
        if line == b"\n" || line == b"\r\n" {
            return Ok(head);
        }
        if !line.ends_with(b"\n") {
            return Err(if read == remaining {
                CgiError::TooLarge
            } else {
                CgiError::Truncated
            });
        }
        head.extend_from_slice(&line);
    }
}

/// Status and headers of a CGI response head (RFC 3875 §6): `Status: 403 Forbidden` sets the
/// status (200 without one), every other line is a header.
fn parse_cgi_head(head: &[u8]) -> Result<(StatusCode, HeaderMap), CgiError> {
    let text = std::str::from_utf8(head).map_err(|_| CgiError::Malformed("not utf-8"))?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        let (name, value) = line
            .split_once(':')
            .ok_or(CgiError::Malformed("a line without a colon"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse::<u16>().ok())
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or(CgiError::Malformed("a bad status"))?;
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| CgiError::Malformed("a bad header name"))?;
        // Framing is the server's business, not the script's.
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        let value =
            HeaderValue::from_str(value).map_err(|_| CgiError::Malformed("a bad header value"))?;
        headers.append(name, value);
    }
    Ok((status, headers))
}

/// The rest of the backend's stdout, chunk by chunk; a read error ends the body with that error.
fn body_stream<R>(reader: R) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut chunk = vec![0u8; BODY_CHUNK_BYTES];
        match reader.read(&mut chunk).await {
            Ok(0) => None,
            Ok(read) => {
                chunk.truncate(read);
                Some((Ok(Bytes::from(chunk)), Some(reader)))
            }
            Err(error) => Some((Err(error), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cgi_head_with_a_status_and_headers() {
        let head = b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\nCache-Control: max-age=0\r\n";
        let (status, headers) = parse_cgi_head(head).unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(headers.get_all(header::CACHE_CONTROL).iter().count(), 2);
        assert!(!headers.contains_key("status"));
    }

    #[test]
    fn a_cgi_head_without_a_status_is_a_200_and_framing_headers_are_dropped() {
        let head = b"Content-Type: application/x-git-upload-pack-advertisement\nTransfer-Encoding: chunked\n";
        let (status, headers) = parse_cgi_head(head).unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/x-git-upload-pack-advertisement"
        );
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
    }

    #[test]
    fn malformed_cgi_heads_are_errors() {
        let cases: [&[u8]; 4] = [
            b"no colon here\n",
            b"Status: abc\n",
            b"Status: 99\n",
            b"Bad Name: x\n",
        ];
        for head in cases {
            assert!(
                matches!(parse_cgi_head(head), Err(CgiError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[tokio::test]
    async fn reads_the_head_and_leaves_the_body() {
        let output: &[u8] = b"Status: 200 OK\r\nContent-Type: x/y\r\n\r\n0008NAK\nPACK";
        let mut reader = tokio::io::BufReader::new(output);
        let head = read_cgi_head(&mut reader).await.unwrap();
        assert_eq!(head, b"Status: 200 OK\r\nContent-Type: x/y\r\n");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"0008NAK\nPACK");
    }

    #[tokio::test]
    async fn refuses_truncated_and_endless_heads() {
        let truncated: &[u8] = b"Content-Type: x/y\r\n";
        let result = read_cgi_head(&mut tokio::io::BufReader::new(truncated)).await;
        assert!(matches!(result, Err(CgiError::Truncated)), "{result:?}");
        let endless = vec![b'a'; MAX_CGI_HEAD_BYTES + 10];
        let result = read_cgi_head(&mut tokio::io::BufReader::new(endless.as_slice())).await;
        assert!(matches!(result, Err(CgiError::TooLarge)), "{result:?}");
    }
}
