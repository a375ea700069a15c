//! Test support for every crate that touches the database: a fresh, throw-away database
//! per test on MariaDB/MySQL or SQLite, and [`db_test_suite!`](crate::db_test_suite), which
//! runs one set of async test functions against both backends (after quickwit's
//! `metastore_test_suite!`), so a behaviour that differs between them fails a test.
//!
//! MariaDB: the server named by `AOS_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`)
//! must be running; each test gets its own `aos_test_<random hex>` database, dropped by
//! [`TestDatabase::cleanup`] (or, if the test panicked before that, when the value drops).
//! SQLite: a database file in a fresh temporary directory.
//!
//! Compiled for this crate's own tests and, for other crates, with the `testing` feature.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::{DbError, connect, migrate_to};

/// The environment variable naming the MariaDB/MySQL server for tests (a URL without a
/// database; the user must be allowed to create and drop databases).
pub const MYSQL_URL_ENV: &str = "AOS_TEST_MYSQL_URL";

/// Used when [`MYSQL_URL_ENV`] is unset: the local test server of DESIGN.md §6.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306";

const POOL_SIZE: u32 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    MySql {
        server_url: String,
        database: String,
        dropped: bool,
    },
    Sqlite {
        // Held so the directory (and the database file in it) lives as long as the test.
        _directory: tempfile::TempDir,
    },
}

impl TestDatabase {
    /// Creates an empty `aos_test_<hex>` database on the test MariaDB/MySQL server.
    pub async fn mysql() -> Result<Self, DbError> {
        let server_url = std::env::var(MYSQL_URL_ENV).unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_owned());
        let database = format!("aos_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let server = connect(&server_url, 1, CONNECT_TIMEOUT).await?;
        // Same character set and collation as the tables (see aos-migrations' support
        // module), so sea-orm's own bookkeeping table matches them too.
        server
            .execute_unprepared(&format!("CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
            .await?;
        server.close().await?;
        let url = database_url(&server_url, &database)?;
        Ok(TestDatabase { url, backend: Backend::MySql { server_url, database, dropped: false } })
    }

    /// Creates an empty SQLite database file in a new temporary directory.
    pub async fn sqlite() -> Result<Self, DbError> {
        let directory = tempfile::Builder::new().prefix("aos-test-").tempdir().map_err(|err| DbError::InvalidUrl {
            url_masked: "sqlite:".to_owned(),
            reason: format!("cannot create a temporary directory: {err}"),
        })?;
        let url = format!("sqlite://{}?mode=rwc", directory.path().join("aos.db").display());
        Ok(TestDatabase { url, backend: Backend::Sqlite { _directory: directory } })
    }

    /// The sqlx URL of this database (for code under test that connects by itself).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new pool on this database, with the schema as it is (empty at first).
    pub async fn connect(&self) -> Result<DatabaseConnection, DbError> {
        connect(&self.url, POOL_SIZE, CONNECT_TIMEOUT).await
    }

    /// A new pool on this database, migrated to the latest schema.
    pub async fn connect_migrated(&self) -> Result<DatabaseConnection, DbError> {
        let db = self.connect().await?;
        migrate_to(&db, None).await?;
        Ok(db)
    }

    /// Drops the database (MariaDB) or deletes the file (SQLite). Call at the end of every
    /// test, after closing its pools; failures are reported on stderr, not raised, so that
    /// cleanup never masks the test's own result.
    pub async fn cleanup(mut self) {
        if let Backend::MySql { server_url, database, dropped } = &mut self.backend {
            match drop_mysql_database(server_url, database).await {
                Ok(()) => *dropped = true,
                Err(err) => eprintln!("cannot drop test database {database}: {err:?}"),
            }
        }
    }
}

impl Drop for TestDatabase {
    /// The safety net for a test that panicked before `cleanup`: drop the MariaDB database
    /// from a helper thread with its own runtime (async work cannot run inside `drop`).
    fn drop(&mut self) {
        if let Backend::MySql { server_url, database, dropped: false } = &self.backend {
            let server_url = server_url.clone();
            let database = database.clone();
            let dropper = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                match runtime {
                    Ok(runtime) => {
                        if let Err(err) = runtime.block_on(drop_mysql_database(&server_url, &database)) {
                            eprintln!("cannot drop test database {database}: {err:?}");
                        }
                    }
                    Err(err) => eprintln!("cannot drop test database {database}: {err}"),
                }
            });
            let _ = dropper.join();
        }
    }
}

async fn drop_mysql_database(server_url: &str, database: &str) -> Result<(), DbError> {
    let server = connect(server_url, 1, CONNECT_TIMEOUT).await?;
    server.execute_unprepared(&format!("DROP DATABASE IF EXISTS `{database}`")).await?;
    server.close().await?;
    Ok(())
}

fn database_url(server_url: &str, database: &str) -> Result<String, DbError> {
    let mut url = url::Url::parse(server_url)
        .map_err(|err| DbError::InvalidUrl { url_masked: crate::mask_url(server_url), reason: err.to_string() })?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

/// What a conformance test function may return: `()` (it asserts) or a `Result` whose
/// error fails the test after the database has been cleaned up.
pub trait TestOutcome {
    fn into_test_result(self) -> Result<(), String>;
}

impl TestOutcome for () {
    fn into_test_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Debug> TestOutcome for Result<(), E> {
    fn into_test_result(self) -> Result<(), String> {
        self.map_err(|err| format!("{err:?}"))
    }
}

/// Runs one conformance test on a fresh database: create, connect, call, close, clean up,
/// then fail if the test returned an error. The macro's generated tests call this.
pub async fn run_conformance_test<F, Fut, T>(backend: TestBackend, test: F)
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: std::future::Future<Output = T>,
    T: TestOutcome,
{
    let database = match backend {
        TestBackend::MySql => TestDatabase::mysql().await,
        TestBackend::Sqlite => TestDatabase::sqlite().await,
    }
    .unwrap_or_else(|err| panic!("cannot create a {backend:?} test database: {err:?}"));
    let db = database
        .connect()
        .await
        .unwrap_or_else(|err| panic!("cannot connect to the {backend:?} test database: {err:?}"));
    let outcome = test(db.clone()).await.into_test_result();
    let _ = db.close().await;
    database.cleanup().await;
    if let Err(err) = outcome {
        panic!("test failed on {backend:?}: {err}");
    }
}

/// The backends the conformance suite covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    MySql,
    Sqlite,
}

/// Generates, for each listed async function `f(&DatabaseConnection)` (returning `()` or a
/// `Result<(), E: Debug>`), a `#[tokio::test]` in `mod mysql` and one in `mod sqlite`, each
/// on a fresh, unmigrated database. The calling crate needs `tokio` (with `macros` and
/// `rt-multi-thread`) among its dev-dependencies.
///
/// ```text
/// async fn nodes_round_trip(db: &DatabaseConnection) -> anyhow::Result<()> { /* ... */ }
/// aos_db::db_test_suite!(nodes_round_trip);
/// ```
#[macro_export]
macro_rules! db_test_suite {
    ($($test:ident),+ $(,)?) => {
        mod mysql {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $crate::testing::run_conformance_test(
                        $crate::testing::TestBackend::MySql,
                        |db| async move { super::$test(&db).await },
                    )
                    .await;
                }
            )+
        }

        mod sqlite {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $crate::testing::run_conformance_test(
                        $crate::testing::TestBackend::Sqlite,
                        |db| async move { super::$test(&db).await },
                    )
                    .await;
                }
            )+
        }
    };
}
