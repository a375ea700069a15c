//! Process-level life of `aos-cloud-manager-api`, on MariaDB and SQLite.

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-api");

aos_testkit::daemon_lifecycle_tests!(BINARY, "api");
