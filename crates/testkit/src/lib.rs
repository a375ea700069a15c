//! Helpers for the daemons' integration tests.
