//! The store conformance suite: the same cases on every backend.
