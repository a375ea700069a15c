//! Process-level life of `aos-cloud-manager-beat`, on MariaDB and SQLite.

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-beat");

aos_testkit::daemon_lifecycle_tests!(BINARY, "beat");
