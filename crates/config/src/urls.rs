//! Connection URLs: the `[database] url` ([`DatabaseUrl`]) and the RabbitMQ `transport_url`
//! ([`TransportUrl`]), parsed from the forms the Python reference product accepts and rendered
//! into the forms our drivers (sqlx through sea-orm, lapin) accept.
//!
//! Operators copy these values from the reference product's files, so we read SQLAlchemy URLs
//! (`mysql+pymysql://…?charset=utf8`, `sqlite:////abs/path`) and oslo.messaging URLs
//! (`rabbit://u:p@h1:5672,u:p@h2:5672/vhost`) as they are, instead of asking operators to
//! rewrite them. Parts we accept but cannot honour are reported as warnings, never dropped
//! silently.
//!
//! Both types carry their password as a [`Secret`], so `Debug` is safe; `Display` and
//! `masked()` print the URL with the password replaced by `***`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// Why a URL was rejected; the caller adds file, section and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct UrlError {
    reason: String,
}

impl UrlError {
    fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

/// A parsed URL plus the parts that were accepted but are ignored (reported as warnings).
#[derive(Debug, Clone)]
pub(crate) struct WithIgnored<T> {
    pub value: T,
    pub ignored: Vec<String>,
}

const MYSQL_DEFAULT_PORT: u16 = 3306;
const AMQP_DEFAULT_PORT: u16 = 5672;

/// Where the service's relational data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// MySQL or MariaDB (`mysql://`, `mariadb://`, `mysql+DRIVER://`, `mariadb+DRIVER://`).
    Mysql(MysqlUrl),
    /// An SQLite database file, relative to the working directory unless absolute.
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database (tests, `config check`).
    SqliteMemory,
}

/// The parts of a MySQL/MariaDB URL that a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlUrl {
    /// The scheme as written (`mysql+pymysql`), kept only to display the URL as configured.
    pub scheme: String,
    pub username: String,
    pub password: Option<Secret<String>>,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Connection character set (`?charset=utf8`), passed on to sqlx.
    pub charset: Option<String>,
}

impl DatabaseUrl {
    /// Parses a SQLAlchemy-style database URL; ignored query parameters are dropped.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        Self::parse_with_ignored(text).map(|parsed| parsed.value)
    }

    pub(crate) fn parse_with_ignored(text: &str) -> Result<WithIgnored<Self>, UrlError> {
        let text = text.trim();
        let Some((scheme, _)) = text.split_once(':') else {
            return Err(UrlError::new(
                "not a database URL: expected mysql+pymysql://user:password@host:3306/database or \
                 sqlite:///path",
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        let backend = scheme.split_once('+').map_or(scheme.as_str(), |(backend, _driver)| backend);
        match backend {
            "mysql" | "mariadb" => parse_mysql(text, &scheme),
            "sqlite" => parse_sqlite(text),
            _ => Err(UrlError::new(format!(
                "unsupported database scheme `{scheme}`: use mysql+pymysql://, mysql://, mariadb:// \
                 or sqlite:///"
            ))),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        !matches!(self, DatabaseUrl::Mysql(_))
    }

    /// The URL in the form sqlx (and therefore sea-orm) accepts: `mysql://user:pass@host:port/db`
    /// with an optional `charset`, `sqlite://PATH?mode=rwc` (created when missing, as SQLAlchemy
    /// does) or `sqlite::memory:`. Contains the password: do not log it.
    pub fn to_sqlx_url(&self) -> String {
        match self {
            DatabaseUrl::Mysql(mysql) => mysql.render("mysql", false),
            // sqlx strips `sqlite://` and percent-decodes the rest up to `?`, so an absolute
            // path keeps its leading slash and a relative one stays relative.
            DatabaseUrl::SqliteFile(path) => format!("sqlite://{}?mode=rwc", encode_sqlite_path(path)),
            DatabaseUrl::SqliteMemory => "sqlite::memory:".to_owned(),
        }
    }

    /// The URL as configured, with the password replaced by `***`.
    pub fn masked(&self) -> String {
        self.to_string()
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Mysql(mysql) => formatter.write_str(&mysql.render(&mysql.scheme, true)),
            DatabaseUrl::SqliteFile(path) => write!(formatter, "sqlite:///{}", path.display()),
            DatabaseUrl::SqliteMemory => formatter.write_str("sqlite:///:memory:"),
        }
    }
}

impl MysqlUrl {
    /// One renderer for both the driver URL (real password) and the display (`***`), so the two
    /// cannot drift apart.
    fn render(&self, scheme: &str, mask_password: bool) -> String {
        let mut out = format!("{scheme}://");
        if !self.username.is_empty() || self.password.is_some() {
            out.push_str(&percent_encode(&self.username));
            if let Some(password) = &self.password {
                out.push(':');
                if mask_password {
                    out.push_str("***");
                } else {
                    out.push_str(&percent_encode(password.expose()));
                }
            }
            out.push('@');
        }
        out.push_str(&bracket_ipv6(&self.host));
        out.push_str(&format!(":{}/{}", self.port, percent_encode(&self.database)));
        if let Some(charset) = &self.charset {
            out.push_str("?charset=");
            out.push_str(&percent_encode(charset));
        }
        out
    }
}

fn parse_mysql(text: &str, scheme: &str) -> Result<WithIgnored<DatabaseUrl>, UrlError> {
    let url = url::Url::parse(text).map_err(|error| UrlError::new(format!("not a valid URL: {error}")))?;
    let host = match url.host() {
        Some(url::Host::Ipv6(address)) => address.to_string(),
        Some(host) => percent_decode(&host.to_string())?,
        // SQLAlchemy and the MySQL drivers fall back to localhost.
        None => "localhost".to_owned(),
    };
    let host = if host.is_empty() { "localhost".to_owned() } else { host };
    let database = percent_decode(url.path().trim_start_matches('/'))?;
    if database.is_empty() {
        return Err(UrlError::new(format!(
            "missing database name: expected {scheme}://user:password@host:3306/DATABASE"
        )));
    }
    if database.contains('/') {
        return Err(UrlError::new(format!("invalid database name `{database}`: it must not contain '/'")));
    }
    let mut charset = None;
    let mut ignored = Vec::new();
    for (name, value) in url.query_pairs() {
        if name == "charset" {
            charset = Some(value.into_owned());
        } else {
            ignored.push(format!("query parameter `{name}` is not supported and is ignored"));
        }
    }
    if url.fragment().is_some() {
        ignored.push("the `#fragment` part is ignored".to_owned());
    }
    let mysql = MysqlUrl {
        scheme: scheme.to_owned(),
        username: percent_decode(url.username())?,
        password: url.password().map(percent_decode).transpose()?.map(Secret::new),
        host,
        port: url.port().unwrap_or(MYSQL_DEFAULT_PORT),
        database,
        charset,
    };
    Ok(WithIgnored { value: DatabaseUrl::Mysql(mysql), ignored })
}

/// SQLAlchemy form: `sqlite:///relative`, `sqlite:////absolute`, `sqlite:///:memory:`,
/// `sqlite://` (memory); sqlx's `sqlite::memory:` is accepted too.
fn parse_sqlite(text: &str) -> Result<WithIgnored<DatabaseUrl>, UrlError> {
    let (_scheme, rest) = text.split_once(':').unwrap_or((text, ""));
    if rest == ":memory:" {
        return Ok(WithIgnored { value: DatabaseUrl::SqliteMemory, ignored: Vec::new() });
    }
    let usage = "use sqlite:///relative/path, sqlite:////absolute/path or sqlite:///:memory:";
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(UrlError::new(format!("malformed sqlite URL: {usage}")));
    };
    let mut ignored = Vec::new();
    let rest = match rest.split_once('?') {
        Some((rest, query)) => {
            if !query.is_empty() {
                ignored.push(format!("query parameters `?{query}` are not supported and are ignored"));
            }
            rest
        }
        None => rest,
    };
    let value = if rest.is_empty() {
        DatabaseUrl::SqliteMemory
    } else if let Some(path) = rest.strip_prefix('/') {
        match path {
            "" | ":memory:" => DatabaseUrl::SqliteMemory,
            path => DatabaseUrl::SqliteFile(PathBuf::from(path)),
        }
    } else {
        return Err(UrlError::new(format!("sqlite URLs have no host part: {usage}")));
    };
    Ok(WithIgnored { value, ignored })
}

fn encode_sqlite_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            other => out.push(other),
        }
    }
    out
}

/// An oslo.messaging RabbitMQ URL: `rabbit://user:password@host:port[,host:port…]/vhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportUrl {
    /// Brokers in the configured order; the first is tried first. Hosts have no IPv6 brackets.
    pub hosts: Vec<(String, u16)>,
    pub username: String,
    pub password: Secret<String>,
    /// The RabbitMQ virtual host, decoded (`/` for the default vhost).
    pub virtual_host: String,
}

impl TransportUrl {
    /// Parses a transport URL; parts that are ignored (query parameters, differing credentials
    /// of later hosts) are dropped.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        Self::parse_with_ignored(text).map(|parsed| parsed.value)
    }

    pub(crate) fn parse_with_ignored(text: &str) -> Result<WithIgnored<Self>, UrlError> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(UrlError::new("not a transport URL: expected rabbit://user:password@host:5672/vhost"));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "rabbit" && scheme != "amqp" {
            return Err(UrlError::new(format!("unsupported transport scheme `{scheme}`: use rabbit:// or amqp://")));
        }
        let mut ignored = Vec::new();
        let rest = match rest.split_once('?') {
            Some((rest, query)) => {
                if !query.is_empty() {
                    ignored.push(format!("query parameters `?{query}` are not supported and are ignored"));
                }
                rest
            }
            None => rest,
        };
        let (netloc, path) = rest.split_once('/').unwrap_or((rest, ""));
        if netloc.is_empty() {
            return Err(UrlError::new("missing broker host: expected rabbit://user:password@host:5672/vhost"));
        }
        let mut hosts = Vec::new();
        let mut credentials: Option<(String, String)> = None;
        for (index, entry) in netloc.split(',').enumerate() {
            let (entry_credentials, host_port) = match entry.rsplit_once('@') {
                Some((userinfo, host_port)) => {
                    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                    (Some((percent_decode(user)?, percent_decode(password)?)), host_port)
                }
                None => (None, entry),
            };
            hosts.push(parse_host_port(host_port, index + 1)?);
            match (&credentials, entry_credentials) {
                (None, Some(found)) if index == 0 => credentials = Some(found),
                (Some(first), Some(found)) if *first != found => ignored.push(format!(
                    "credentials of broker {} differ from the first broker's and are ignored",
                    index + 1
                )),
                _ => {}
            }
        }
        // Without credentials RabbitMQ's stock account is what oslo.messaging falls back to.
        let (username, password) = credentials.unwrap_or_else(|| ("guest".to_owned(), "guest".to_owned()));
        // oslo.messaging treats an empty path (`…:5672/` or no path) as the default vhost `/`.
        let virtual_host = match percent_decode(path)? {
            path if path.is_empty() => "/".to_owned(),
            path => path,
        };
        let value = TransportUrl { hosts, username, password: Secret::new(password), virtual_host };
        Ok(WithIgnored { value, ignored })
    }

    /// The same brokers and credentials on another virtual host.
    pub fn with_vhost(&self, virtual_host: &str) -> TransportUrl {
        TransportUrl { virtual_host: virtual_host.to_owned(), ..self.clone() }
    }

    /// The AMQP URI of the first broker, as lapin takes it: `amqp://user:pass@host:port/%2F`.
    /// Contains the password: do not log it.
    pub fn to_amqp_uri(&self) -> String {
        self.to_amqp_uris().into_iter().next().unwrap_or_default()
    }

    /// One AMQP URI per configured broker, in order, for fail-over.
    pub fn to_amqp_uris(&self) -> Vec<String> {
        let userinfo = format!("{}:{}", percent_encode(&self.username), percent_encode(self.password.expose()));
        let virtual_host = percent_encode(&self.virtual_host);
        self.hosts
            .iter()
            .map(|(host, port)| format!("amqp://{userinfo}@{}:{port}/{virtual_host}", bracket_ipv6(host)))
            .collect()
    }

    /// The URL in oslo form with the password replaced by `***`.
    pub fn masked(&self) -> String {
        self.to_string()
    }
}

impl std::str::FromStr for TransportUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for TransportUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> =
            self.hosts.iter().map(|(host, port)| format!("{}:{port}", bracket_ipv6(host))).collect();
        let path = if self.virtual_host == "/" { String::new() } else { percent_encode(&self.virtual_host) };
        write!(formatter, "rabbit://{}:***@{}/{path}", percent_encode(&self.username), hosts.join(","))
    }
}

fn parse_host_port(text: &str, position: usize) -> Result<(String, u16), UrlError> {
    let missing_host = || UrlError::new(format!("broker {position}: missing host"));
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::new(format!("broker {position}: unclosed '[' in `{text}`")))?;
        match after {
            "" => (host, None),
            after => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(UrlError::new(format!("broker {position}: unexpected `{after}` after ']'"))),
            },
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(missing_host());
    }
    let port = match port {
        None => AMQP_DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(UrlError::new(format!("broker {position}: invalid port `{port}`"))),
        },
    };
    Ok((host.to_owned(), port))
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

/// Percent-encodes everything except RFC 3986 unreserved characters, which is safe in any
/// URL component (user, password, path segment, query value).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept, as Python's
/// `urllib.parse.unquote` (used by the reference) keeps it.
pub(crate) fn percent_decode(text: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::new("percent-encoded text is not valid UTF-8"))
}

/// Masks the password of every `user:password@` in a URL as written, without parsing it, so
/// that even a value we reject can be echoed in an error message.
pub(crate) fn mask_url_text(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end =
        text[authority_start..].find(['/', '?', '#']).map_or(text.len(), |offset| authority_start + offset);
    let masked: Vec<String> = text[authority_start..authority_end]
        .split(',')
        .map(|entry| match entry.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***@{host}"),
                None => entry.to_owned(),
            },
            None => entry.to_owned(),
        })
        .collect();
    format!("{}{}{}", &text[..authority_start], masked.join(","), &text[authority_end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql(text: &str) -> MysqlUrl {
        match DatabaseUrl::parse(text).unwrap() {
            DatabaseUrl::Mysql(mysql) => mysql,
            other => panic!("expected MySQL, got {other:?}"),
        }
    }

    #[test]
    fn reference_default_database_url_becomes_a_sqlx_mysql_url_with_charset() {
        let url = DatabaseUrl::parse("mysql+pymysql://aos:password@localhost:3306/cloud_manager?charset=utf8").unwrap();
        assert_eq!(url.to_sqlx_url(), "mysql://aos:password@localhost:3306/cloud_manager?charset=utf8");
        assert_eq!(url.masked(), "mysql+pymysql://aos:***@localhost:3306/cloud_manager?charset=utf8");
        let parts = mysql("mysql+pymysql://aos:password@localhost:3306/cloud_manager?charset=utf8");
        assert_eq!(parts.scheme, "mysql+pymysql");
        assert_eq!(parts.username, "aos");
        assert_eq!(parts.password.as_ref().map(|p| p.expose().as_str()), Some("password"));
        assert_eq!((parts.host.as_str(), parts.port), ("localhost", 3306));
        assert_eq!(parts.database, "cloud_manager");
        assert_eq!(parts.charset.as_deref(), Some("utf8"));
    }

    #[test]
    fn every_mysql_flavour_is_accepted() {
        for scheme in
            ["mysql", "mariadb", "mysql+mysqldb", "mysql+pymysql", "MySQL+PyMySQL", "mariadb+mariadbconnector"]
        {
            let url = DatabaseUrl::parse(&format!("{scheme}://u:p@db.example:3307/cm")).unwrap();
            assert_eq!(url.to_sqlx_url(), "mysql://u:p@db.example:3307/cm", "{scheme}");
        }
    }

    #[test]
    fn mysql_defaults_port_and_keeps_special_characters_of_the_password() {
        let url = DatabaseUrl::parse("mysql://aos:p%40ss%2Fw0rd@10.0.0.5/cm").unwrap();
        assert_eq!(url.to_sqlx_url(), "mysql://aos:p%40ss%2Fw0rd@10.0.0.5:3306/cm");
        let parts = mysql("mysql://aos:p%40ss%2Fw0rd@10.0.0.5/cm");
        assert_eq!(parts.password.unwrap().expose(), "p@ss/w0rd");
        assert_eq!(mysql("mysql://root@[::1]:3306/test").host, "::1");
        assert_eq!(
            DatabaseUrl::parse("mysql://root@[::1]:3306/test").unwrap().to_sqlx_url(),
            "mysql://root@[::1]:3306/test"
        );
    }

    #[test]
    fn unknown_sqlalchemy_parameters_are_dropped_and_reported() {
        let parsed =
            DatabaseUrl::parse_with_ignored("mysql+pymysql://a:b@h/db?charset=utf8mb4&read_timeout=5").unwrap();
        assert_eq!(parsed.value.to_sqlx_url(), "mysql://a:b@h:3306/db?charset=utf8mb4");
        assert_eq!(parsed.ignored.len(), 1);
        assert!(parsed.ignored[0].contains("read_timeout"), "{:?}", parsed.ignored);
    }

    #[test]
    fn sqlite_urls_follow_sqlalchemy_slashes() {
        let cases = [
            (
                "sqlite:///relative/cm.db",
                DatabaseUrl::SqliteFile("relative/cm.db".into()),
                "sqlite://relative/cm.db?mode=rwc",
            ),
            (
                "sqlite:////var/lib/aos/cm.db",
                DatabaseUrl::SqliteFile("/var/lib/aos/cm.db".into()),
                "sqlite:///var/lib/aos/cm.db?mode=rwc",
            ),
            ("sqlite:///:memory:", DatabaseUrl::SqliteMemory, "sqlite::memory:"),
            ("sqlite::memory:", DatabaseUrl::SqliteMemory, "sqlite::memory:"),
            ("sqlite://", DatabaseUrl::SqliteMemory, "sqlite::memory:"),
        ];
        for (text, expected, sqlx) in cases {
            let parsed = DatabaseUrl::parse(text).unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_sqlx_url(), sqlx, "{text}");
        }
        assert_eq!(DatabaseUrl::parse("sqlite:////tmp/a?b#c.db").unwrap().to_sqlx_url(), "sqlite:///tmp/a?mode=rwc");
        assert_eq!(
            DatabaseUrl::SqliteFile("/tmp/a?b#c%.db".into()).to_sqlx_url(),
            "sqlite:///tmp/a%3Fb%23c%25.db?mode=rwc"
        );
        assert_eq!(DatabaseUrl::parse("sqlite:////var/x.db").unwrap().masked(), "sqlite:////var/x.db");
        assert!(DatabaseUrl::parse("sqlite://host/x.db").unwrap_err().to_string().contains("no host part"));
    }

    #[test]
    fn unsupported_database_schemes_are_rejected() {
        for text in ["postgresql://u:p@h/db", "oracle://h/db", "not a url"] {
            assert!(DatabaseUrl::parse(text).is_err(), "{text}");
        }
        let error = DatabaseUrl::parse("postgresql+psycopg2://u:p@h/db").unwrap_err();
        assert!(error.to_string().contains("unsupported database scheme `postgresql+psycopg2`"), "{error}");
        assert!(DatabaseUrl::parse("mysql://u:p@h:3306/").unwrap_err().to_string().contains("missing database name"));
    }

    #[test]
    fn transport_url_with_only_a_slash_means_the_default_vhost() {
        let url = TransportUrl::parse("rabbit://guest:guest@127.0.0.1:5672/").unwrap();
        assert_eq!(url.hosts, vec![("127.0.0.1".to_owned(), 5672)]);
        assert_eq!((url.username.as_str(), url.password.expose().as_str()), ("guest", "guest"));
        assert_eq!(url.virtual_host, "/");
        assert_eq!(url.to_amqp_uri(), "amqp://guest:guest@127.0.0.1:5672/%2F");
        assert_eq!(url.masked(), "rabbit://guest:***@127.0.0.1:5672/");
        assert_eq!(TransportUrl::parse("amqp://u:p@h").unwrap().virtual_host, "/");
    }

    #[test]
    fn transport_url_names_its_vhost_in_the_path() {
        let url = TransportUrl::parse("rabbit://u:p@h:5672/osenv").unwrap();
        assert_eq!(url.virtual_host, "osenv");
        assert_eq!(url.to_amqp_uri(), "amqp://u:p@h:5672/osenv");
        assert_eq!(url.with_vhost("/").to_amqp_uri(), "amqp://u:p@h:5672/%2F");
        assert_eq!(url.with_vhost("a/b").masked(), "rabbit://u:***@h:5672/a%2Fb");
        assert_eq!(TransportUrl::parse("rabbit://u:p@h/%2Fweird").unwrap().virtual_host, "/weird");
    }

    #[test]
    fn transport_url_lists_several_brokers() {
        let parsed = TransportUrl::parse_with_ignored(
            "rabbit://aos:s3cr%40t@ctl1:5672,aos:s3cr%40t@ctl2,[fd00::3]:5673/aos?ssl=1",
        )
        .unwrap();
        let url = parsed.value;
        assert_eq!(url.hosts, vec![("ctl1".into(), 5672), ("ctl2".into(), 5672), ("fd00::3".into(), 5673)]);
        assert_eq!(url.password.expose(), "s3cr@t");
        assert_eq!(url.to_amqp_uris()[2], "amqp://aos:s3cr%40t@[fd00::3]:5673/aos");
        assert_eq!(url.masked(), "rabbit://aos:***@ctl1:5672,ctl2:5672,[fd00::3]:5673/aos");
        assert_eq!(parsed.ignored.len(), 1, "{:?}", parsed.ignored);
    }

    #[test]
    fn transport_url_differing_credentials_are_reported() {
        let parsed = TransportUrl::parse_with_ignored("rabbit://a:1@h1,b:2@h2/").unwrap();
        assert_eq!(parsed.value.username, "a");
        assert!(parsed.ignored[0].contains("broker 2"), "{:?}", parsed.ignored);
    }

    #[test]
    fn transport_url_without_credentials_uses_guest() {
        let url = TransportUrl::parse("rabbit://localhost/").unwrap();
        assert_eq!(url.to_amqp_uri(), "amqp://guest:guest@localhost:5672/%2F");
    }

    #[test]
    fn bad_transport_urls_are_rejected() {
        let cases = [
            ("kafka://h:9092/", "unsupported transport scheme `kafka`"),
            ("rabbit:///", "missing broker host"),
            ("rabbit://u:p@h:notaport/", "invalid port `notaport`"),
            ("rabbit://u:p@h:0/", "invalid port `0`"),
            ("rabbit://u:p@h1,/", "broker 2: missing host"),
            ("127.0.0.1:5672", "not a transport URL"),
        ];
        for (text, expected) in cases {
            let error = TransportUrl::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let transport = TransportUrl::parse("rabbit://u:topsecret@h/").unwrap();
        let database = DatabaseUrl::parse("mysql://u:topsecret@h/db").unwrap();
        assert!(!format!("{transport:?} {transport}").contains("topsecret"));
        assert!(!format!("{database:?} {database}").contains("topsecret"));
    }

    #[test]
    fn raw_url_text_is_masked_without_parsing() {
        assert_eq!(mask_url_text("postgres://u:pw@h:5/db?x=1"), "postgres://u:***@h:5/db?x=1");
        assert_eq!(mask_url_text("rabbit://a:1@h1,b:2@h2/v"), "rabbit://a:***@h1,b:***@h2/v");
        assert_eq!(mask_url_text("rabbit://a@h1/"), "rabbit://a@h1/");
        assert_eq!(mask_url_text("sqlite:///x.db"), "sqlite:///x.db");
    }

    #[test]
    fn percent_coding_round_trips() {
        assert_eq!(percent_encode("/ a@b"), "%2F%20a%40b");
        assert_eq!(percent_decode("%2F%20a%40b%zz%").unwrap(), "/ a@b%zz%");
    }
}
