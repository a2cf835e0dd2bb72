//! The store conformance suite: the same cases on every backend.
//!
//! Each case is an `async fn(Arc<dyn Store>)` written once, in the file of its area
//! (`workspaces`, `policies`, `exchange`, `tokens`, `audit`, `chain`, `intents`);
//! [`conformance_cases!`] turns it into `sqlite::<case>` and `postgres::<case>` tests, each on a
//! fresh database: a temp file for
//! SQLite, a fresh schema `t_<uuid>` (dropped afterwards) in the database named by
//! `STS_TEST_DATABASE_URL` for PostgreSQL. PostgreSQL being unreachable fails the tests: a
//! silent skip would let the backend that production replicas use go untested. `races` holds
//! the PostgreSQL-only cases of two broker processes sharing one database, `bulk` those of the
//! PostgreSQL writer's bulk exchange write.
//!
//! Run: `cargo test --lib store::` (only one backend: `store::conformance::sqlite::`).

mod audit;
mod batching;
mod bulk;
mod chain;
mod exchange;
mod fixtures;
mod harness;
mod intents;
mod outbox;
mod policies;
mod races;
mod signing_keys;
mod tokens;
mod workspaces;

/// One `#[tokio::test]` per backend and case, in modules `sqlite` and `postgres`, named after
/// the case (`area::case` runs as `sqlite::case` and `postgres::case`).
/// Cases after `raw:` also get a [`harness::Raw`], the database reached around the store.
macro_rules! conformance_cases {
    (
        $($area:ident::$case:ident),* $(,)?;
        raw: $($raw_area:ident::$raw_case:ident),* $(,)?
    ) => {
        conformance_cases!(@backend sqlite; $($area::$case),*; raw: $($raw_area::$raw_case),*);
        conformance_cases!(@backend postgres; $($area::$case),*; raw: $($raw_area::$raw_case),*);
    };
    // One backend's module: `$backend` names both the module and its runner in `harness`.
    (
        @backend $backend:ident;
        $($area:ident::$case:ident),*;
        raw: $($raw_area:ident::$raw_case:ident),*
    ) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    super::harness::$backend(super::harness::without_raw(super::$area::$case))
                        .await;
                }
            )*
            $(
                #[tokio::test]
                async fn $raw_case() {
                    super::harness::$backend(super::$raw_area::$raw_case).await;
                }
            )*
        }
    };
}

conformance_cases!(
    workspaces::answers_a_ping,
    workspaces::workspaces_round_trip_and_list_in_id_order,
    workspaces::creating_an_existing_workspace_is_a_conflict,
    workspaces::the_sts_entitlement_flips_and_a_missing_workspace_gives_none,
    workspaces::links_round_trip_and_owner_lookup_ignores_case,
    workspaces::an_installation_linked_to_another_workspace_is_a_conflict,
    workspaces::relinking_the_same_installation_updates_the_row,
    workspaces::a_second_installation_for_the_same_owner_is_a_conflict,
    workspaces::linking_into_a_missing_workspace_is_not_found,
    workspaces::unlinking_ignores_case_and_frees_the_installation,
    workspaces::deleting_a_workspace_removes_its_rows_but_keeps_its_audit_trail,
    policies::policy_versions_count_up_and_continue_after_a_delete,
    policies::list_policies_returns_current_versions_of_live_policies_by_name,
    policies::policy_versions_are_counted_per_workspace,
    policies::putting_a_policy_into_a_missing_workspace_is_not_found,
    policies::every_policy_version_is_listed_newest_first_deleted_ones_too,
    exchange::an_exchange_writes_the_session_and_its_audit_event,
    exchange::a_replayed_token_is_refused_and_nothing_of_the_second_attempt_is_written,
    exchange::an_exchange_into_a_missing_workspace_writes_nothing,
    exchange::revoking_a_session_is_idempotent,
    exchange::the_first_signing_key_stored_wins,
    tokens::an_issuance_writes_every_token_and_its_audit_event,
    tokens::an_issuance_with_a_duplicate_token_id_writes_nothing,
    tokens::list_tokens_applies_every_filter_newest_first,
    tokens::marking_tokens_revoked_counts_only_newly_revoked_ones,
    tokens::purge_clears_expired_sealed_tokens_and_old_replay_keys,
    tokens::purge_deletes_session_and_token_rows_past_retention_but_never_the_audit_log,
    audit::audit_pages_run_newest_first_with_cursors_within_one_workspace,
    audit::a_full_last_audit_page_has_no_cursor,
    audit::the_audit_limit_is_clamped_to_at_least_one,
    audit::an_audit_event_id_is_stored_once,
    intents::an_intent_without_a_result_becomes_one_outcome_unknown_event_at_start,
    intents::a_mint_record_writes_rows_event_and_resolves_its_intent_in_one_transaction,
    intents::a_mint_record_is_refused_when_the_workspace_or_session_changed_meanwhile,
    intents::revoking_a_workspaces_sessions_ends_only_its_live_ones,
    batching::each_write_of_a_batch_keeps_its_own_outcome,
    batching::exchanges_raced_into_several_workspaces_are_each_written_once_and_chained,
    batching::mints_raced_with_their_intents_each_keep_their_own_outcome,
    batching::other_writes_get_their_turn_during_a_flood_of_batches,
    chain::every_append_path_links_events_into_one_chain_per_workspace,
    chain::concurrent_appends_to_one_workspace_keep_one_chain,
    chain::a_refused_write_leaves_no_hole_in_the_chain,
    outbox::every_append_is_queued_and_each_workspace_releases_one_event_at_a_time,
    outbox::a_failed_event_waits_its_backoff_and_holds_back_its_workspace,
    outbox::unexported_rows_older_than_the_cutoff_are_dropped,
    signing_keys::a_rotation_keeps_one_active_key_and_lists_the_previous_one_deactivated,
    signing_keys::a_rotation_onto_a_kept_kid_changes_nothing,
    signing_keys::a_purge_drops_only_keys_deactivated_before_its_cutoff_never_the_active_one,
    signing_keys::concurrent_rotations_leave_one_active_key;
    raw:
    chain::verify_names_the_first_event_whose_content_or_link_does_not_match,
    chain::every_stored_column_of_an_audit_event_is_chained,
);
