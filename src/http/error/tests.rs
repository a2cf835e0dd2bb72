//! Tests of the status table and the error envelope.

use super::*;
use crate::flow::Internal;

/// The status table, as the contract fixes it.
#[test]
fn every_flow_error_answers_with_its_contract_status() {
    let cases: Vec<(FlowError, StatusCode, &str)> = vec![
        (
            FlowError::invalid("x"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            FlowError::NotGitHubActionsSession,
            StatusCode::BAD_REQUEST,
            "not_github_actions_session",
        ),
        (
            FlowError::Unauthenticated(Unauthenticated::SessionRevoked),
            StatusCode::UNAUTHORIZED,
            "session_revoked",
        ),
        (
            FlowError::Replayed,
            StatusCode::UNAUTHORIZED,
            "token_replayed",
        ),
        (
            FlowError::Forbidden(Forbidden::StsNotEntitled),
            StatusCode::FORBIDDEN,
            "sts_not_entitled",
        ),
        (
            FlowError::NotFound(Missing::Installation {
                owner: "acme".into(),
            }),
            StatusCode::NOT_FOUND,
            "installation_not_found",
        ),
        (
            FlowError::NotFound(Missing::Session),
            StatusCode::NOT_FOUND,
            "session_not_found",
        ),
        (
            FlowError::Conflict(Conflict::InstallationLinkedElsewhere),
            StatusCode::CONFLICT,
            "installation_linked_elsewhere",
        ),
        (
            FlowError::RateLimited {
                retry_after: Some(std::time::Duration::from_secs(7)),
            },
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        ),
        (
            FlowError::PolicyInvalid(vec!["rules: empty".into()]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_invalid",
        ),
        (
            FlowError::RevokeIncomplete {
                not_revoked: 1,
                workspace_kept: true,
            },
            StatusCode::BAD_GATEWAY,
            "github_revoke_failed",
        ),
        (
            FlowError::Abandoned,
            StatusCode::GATEWAY_TIMEOUT,
            "mint_abandoned",
        ),
        (
            FlowError::GitHub(GitHubError::RateLimited { retry_after: None }),
            StatusCode::SERVICE_UNAVAILABLE,
            "github_rate_limited",
        ),
        (
            FlowError::GitHub(GitHubError::NotFound),
            StatusCode::NOT_FOUND,
            "github_not_found",
        ),
        (
            FlowError::GitHub(GitHubError::Suspended),
            StatusCode::BAD_GATEWAY,
            "github_installation_suspended",
        ),
        (
            FlowError::Store(StoreError::Replay),
            StatusCode::UNAUTHORIZED,
            "token_replayed",
        ),
        (
            FlowError::Store(StoreError::Corrupt("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR,
            "database_error",
        ),
        (
            FlowError::Internal {
                kind: Internal::AuditWrite,
                source: anyhow::anyhow!("disk full"),
            },
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit_write_failed",
        ),
    ];
    for (error, status, tag) in cases {
        let api = ApiError::from(error);
        assert_eq!((api.status, api.tag), (status, tag));
    }
}

#[test]
fn internal_errors_show_no_cause_and_rate_limits_say_when_to_retry() {
    let api = ApiError::from(FlowError::Internal {
        kind: Internal::SessionSigning,
        source: anyhow::anyhow!("secret detail"),
    });
    assert_eq!(api.message, "internal error");
    let res = ApiError::from(FlowError::RateLimited {
        retry_after: Some(std::time::Duration::from_secs(7)),
    })
    .into_response();
    assert_eq!(res.headers()[header::RETRY_AFTER], "7");
}
