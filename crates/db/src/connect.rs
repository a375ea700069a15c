//! Opening the connection pool: URL handling, per-backend settings, and URL masking for
//! anything that is logged or put in an error.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use tracing::debug;

use crate::DbError;

/// How long a SQLite statement waits for another connection's write lock before failing
/// with "database is locked". Writers hold the lock for one short transaction, so this only
/// has to cover a burst of them.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a pool on an sqlx URL: `mysql://user:pass@host:3306/db` (also `mariadb://`, and
/// oslo.db's `mysql+pymysql://…` spelling, whose driver part is dropped) or
/// `sqlite:///path/aos.db?mode=rwc` / `sqlite::memory:`.
///
/// SQLite connections run in WAL mode (readers do not block the writer) with foreign keys
/// enforced and a [`SQLITE_BUSY_TIMEOUT`]. An in-memory database exists only as long as
/// its one connection, so the pool is pinned to a single connection that never expires.
/// Statement logging is off: statements can carry secrets (ciphertext, tokens).
pub async fn connect(
    url: &str,
    max_connections: u32,
    connect_timeout: Duration,
) -> Result<DatabaseConnection, DbError> {
    let url_masked = mask_url(url);
    let url = normalize_url(url).map_err(|reason| DbError::InvalidUrl { url_masked: url_masked.clone(), reason })?;

    // sea-orm records its connect options (URL included) in a trace-level span, so the
    // password is taken out of the URL and handed to sqlx through a closure it never prints.
    let (url, password) = split_password(&url);
    let mut options = ConnectOptions::new(url.clone());
    options.max_connections(max_connections.max(1)).connect_timeout(connect_timeout).sqlx_logging(false);
    if let Some(password) = password {
        options.map_sqlx_mysql_opts(move |mysql| mysql.password(&password));
    }

    if url.starts_with("sqlite:") {
        // Validate here so a bad SQLite URL is an InvalidUrl, not a connection failure.
        url.parse::<SqliteConnectOptions>()
            .map_err(|err| DbError::InvalidUrl { url_masked: url_masked.clone(), reason: err.to_string() })?;
        let in_memory = is_sqlite_in_memory(&url);
        options.map_sqlx_sqlite_opts(move |sqlite| {
            let sqlite = sqlite
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                // Durability first: a recorded notification or task must survive power loss.
                .synchronous(SqliteSynchronous::Full);
            if in_memory { sqlite } else { sqlite.journal_mode(SqliteJournalMode::Wal) }
        });
        if in_memory {
            options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
        }
    }

    debug!(url = %url_masked, max_connections, "connecting to database");
    Database::connect(options).await.map_err(|source| DbError::Connect { url_masked, source })
}

/// The URL with any password replaced by `***`, safe for logs and error messages. A URL
/// that does not parse is not echoed at all (it might be a password typed in the wrong
/// place).
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Cannot fail: a URL that has a password can have it replaced.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable database url>".to_owned(),
    }
}

/// Accepts the schemes sqlx knows plus oslo.db's `mysql+<driver>` form.
fn normalize_url(url: &str) -> Result<String, String> {
    let (scheme, rest) =
        url.split_once(':').ok_or_else(|| "missing scheme (expected mysql:// or sqlite:)".to_owned())?;
    let scheme = scheme.to_ascii_lowercase();
    let scheme = match scheme.split_once('+') {
        Some(("mysql", _driver)) => "mysql",
        _ => scheme.as_str(),
    };
    match scheme {
        "mysql" | "mariadb" | "sqlite" => Ok(format!("{scheme}:{rest}")),
        other => Err(format!("unsupported scheme {other:?} (expected mysql://, mariadb:// or sqlite:)")),
    }
}

/// Splits `mysql://user:secret@host/db` into `mysql://user@host/db` and the decoded secret.
fn split_password(url: &str) -> (String, Option<String>) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (url.to_owned(), None);
    };
    let Some(encoded) = parsed.password().map(str::to_owned) else {
        return (url.to_owned(), None);
    };
    if parsed.set_password(None).is_err() {
        return (url.to_owned(), None);
    }
    (parsed.to_string(), Some(percent_decode(&encoded)))
}

/// Decodes `%XX` escapes (URL userinfo is percent-encoded; the server wants the raw bytes).
fn percent_decode(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn is_sqlite_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_url_hides_the_password_and_keeps_the_rest() {
        assert_eq!(
            mask_url("mysql://aos:s3cret@db.example:3306/aos?charset=utf8mb4"),
            "mysql://aos:***@db.example:3306/aos?charset=utf8mb4"
        );
        assert_eq!(mask_url("mysql://root@127.0.0.1:3306/aos"), "mysql://root@127.0.0.1:3306/aos");
        assert_eq!(mask_url("not a url s3cret"), "<unparseable database url>");
        assert!(!mask_url("mysql+pymysql://u:p%40ss@h/db").contains("p%40ss"));
    }

    #[test]
    fn normalize_url_accepts_oslo_driver_suffix_and_rejects_unknown_schemes() {
        assert_eq!(normalize_url("mysql+pymysql://u:p@h/db").unwrap(), "mysql://u:p@h/db");
        assert_eq!(normalize_url("sqlite::memory:").unwrap(), "sqlite::memory:");
        assert!(normalize_url("postgres://h/db").is_err());
        assert!(normalize_url("no-scheme").is_err());
    }

    #[test]
    fn split_password_removes_and_decodes_the_secret() {
        let (url, password) = split_password("mysql://aos:p%40ss%2Fw0rd@db:3306/aos");
        assert_eq!(url, "mysql://aos@db:3306/aos");
        assert_eq!(password.as_deref(), Some("p@ss/w0rd"));
        let (url, password) = split_password("sqlite:///var/lib/aos/aos.db?mode=rwc");
        assert_eq!(url, "sqlite:///var/lib/aos/aos.db?mode=rwc");
        assert_eq!(password, None);
        assert_eq!(percent_decode("100%"), "100%");
    }

    async fn pragma(db: &DatabaseConnection, name: &str) -> String {
        use sea_orm::{ConnectionTrait, Statement};
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), format!("PRAGMA {name}")))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0)
            .map(|value| value.to_string())
            .or_else(|_| row.try_get_by_index::<String>(0))
            .unwrap()
    }

    #[tokio::test]
    async fn sqlite_files_use_wal_and_enforce_foreign_keys() {
        let directory = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", directory.path().join("aos.db").display());
        let db = connect(&url, 3, Duration::from_secs(5)).await.unwrap();
        assert_eq!(pragma(&db, "journal_mode").await, "wal");
        assert_eq!(pragma(&db, "foreign_keys").await, "1");
        assert_eq!(pragma(&db, "busy_timeout").await, SQLITE_BUSY_TIMEOUT.as_millis().to_string());
        db.close().await.unwrap();
    }

    #[tokio::test]
    async fn an_in_memory_sqlite_database_keeps_its_schema_across_statements() {
        let db = connect("sqlite::memory:", 8, Duration::from_secs(5)).await.unwrap();
        crate::migrate_to(&db, None).await.unwrap();
        // With more than one pooled connection each would see its own empty database.
        for _ in 0..3 {
            assert_eq!(crate::current_version(&db).await.unwrap(), crate::latest_version());
        }
        assert_eq!(pragma(&db, "foreign_keys").await, "1");
    }

    #[tokio::test]
    async fn connect_reports_a_bad_url_without_its_password() {
        let err = connect("postgres://u:hunter2@h/db", 1, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, DbError::InvalidUrl { .. }), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn connect_failure_names_the_masked_url() {
        // Port 1 on loopback: nothing listens there, so the connect fails fast.
        let err = connect("mysql://u:hunter2@127.0.0.1:1/db", 1, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, DbError::Connect { .. }), "{err:?}");
        let message = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("127.0.0.1:1"), "{message}");
    }
}
