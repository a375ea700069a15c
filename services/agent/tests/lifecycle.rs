//! Process-level life of `aos-cloud-manager-agent`, on MariaDB and SQLite.

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-agent");

aos_testkit::daemon_lifecycle_tests!(BINARY, "agent");
