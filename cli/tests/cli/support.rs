//! What every CLI test needs: running the built binary with a configuration file of the
//! test's own, a fresh database per test on MariaDB or SQLite, and reading the `|` tables
//! the CLI prints.

use std::path::{Path, PathBuf};
use std::process::Command;

use aos_db::testing::TestDatabase;
use tempfile::TempDir;

/// The admin CLI under test, built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_aos-cloud-manager");

/// The database server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    MySql,
    Sqlite,
}

/// Generates, for each listed `async fn test(backend: Backend)`, one `#[tokio::test]` in
/// `mod mysql` and one in `mod sqlite`.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod mysql {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Backend::MySql).await;
                }
            )+
        }

        mod sqlite {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Backend::Sqlite).await;
                }
            )+
        }
    };
}
pub(crate) use on_both_backends;

/// What one run of the CLI produced.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }

    /// Everything the run printed, for assertion messages.
    pub fn report(&self) -> String {
        format!("exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }

    /// The rows of every `|` table in stdout, header included, each cell trimmed; the
    /// `---+---` rule under a header is left out.
    pub fn table_rows(&self) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .filter(|line| line.contains(" | ") || line.ends_with(" |"))
            .map(|line| line.split('|').map(|cell| cell.trim().to_owned()).collect())
            .collect()
    }

    /// Asserts that stdout has a table row made of exactly these cells.
    pub fn assert_row(&self, expected: &[&str]) {
        let rows = self.table_rows();
        assert!(rows.iter().any(|row| row == expected), "no row {expected:?} in the output:\n{}", self.report());
    }
}

/// Runs the CLI with only `config_file` as configuration (never /etc/aos) and `args` after it.
pub fn run_cli(config_file: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("--no-default-config-files")
        .arg("--config-file")
        .arg(config_file)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {BIN}: {error}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A configuration file `cloud_manager.conf` with `contents` in a fresh temporary directory
/// (kept alive by the returned `TempDir`).
pub fn config_file(contents: &str) -> (TempDir, PathBuf) {
    let directory = tempfile::Builder::new().prefix("aos-cli-test-").tempdir().expect("temporary directory");
    let path = directory.path().join("cloud_manager.conf");
    std::fs::write(&path, contents).expect("write the configuration file");
    (directory, path)
}

/// A fresh, empty database and a configuration file whose `[database] url` names it in the
/// form an operator writes (the reference's SQLAlchemy form for MariaDB).
pub struct Fixture {
    pub database: TestDatabase,
    pub directory: TempDir,
    pub config: PathBuf,
}

impl Fixture {
    /// `extra` is appended to the configuration file after the `[database]` section.
    pub async fn new(backend: Backend, extra: &str) -> Fixture {
        let database = match backend {
            Backend::MySql => TestDatabase::mysql().await,
            Backend::Sqlite => TestDatabase::sqlite().await,
        }
        .unwrap_or_else(|error| panic!("cannot create a {backend:?} test database: {error:?}"));
        let database_url = config_database_url(database.url());
        let (directory, config) = config_file(&format!("[database]\nurl = {database_url}\n{extra}"));
        Fixture { database, directory, config }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_cli(&self.config, args)
    }

    /// The schema version of the test database, read directly (not through the CLI).
    pub async fn current_version(&self) -> u32 {
        let db = self.database.connect().await.expect("connect to the test database");
        let version = aos_db::current_version(&db).await.expect("read the schema version");
        db.close().await.expect("close the test connection");
        version
    }

    /// The names of this build's migrations, in order.
    pub async fn migration_names(&self) -> Vec<String> {
        let db = self.database.connect().await.expect("connect to the test database");
        let names = aos_db::migration_status(&db)
            .await
            .expect("read the migration status")
            .into_iter()
            .map(|migration| migration.name)
            .collect();
        db.close().await.expect("close the test connection");
        names
    }

    pub async fn cleanup(self) {
        self.database.cleanup().await;
    }
}

/// The test database's sqlx URL rewritten as an operator writes it in `[database] url`:
/// `mysql+pymysql://root@127.0.0.1:3306/<db>?charset=utf8`, or SQLAlchemy's
/// `sqlite:///` followed by the absolute path (four slashes in all: three is a relative path).
fn config_database_url(sqlx_url: &str) -> String {
    if let Some(rest) = sqlx_url.strip_prefix("mysql://") {
        format!("mysql+pymysql://{rest}?charset=utf8")
    } else {
        let path = sqlx_url.strip_prefix("sqlite://").expect("a sqlite:// test database URL");
        let path = path.split('?').next().unwrap_or(path);
        assert!(path.starts_with('/'), "the test database path is absolute: {path}");
        format!("sqlite:///{path}")
    }
}
