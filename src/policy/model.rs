//! The policy document as written by an admin.

/// A whole policy.
#[derive(Debug, Clone)]
pub struct PolicyDocument {}

/// One rule.
#[derive(Debug, Clone)]
pub struct RuleDocument {}
