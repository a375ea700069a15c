//! Encryption at rest of power device credentials.
//!
//! The key is 32 random bytes kept outside the database, in `[power] credential_key_file` (64
//! hexadecimal digits, mode 0600): someone holding a database dump alone learns nothing.
//! Each credential is sealed with AES-256-GCM (ring) under a fresh random 96-bit nonce; the
//! device name is the associated data, so a ciphertext copied onto another device's row does
//! not open. Stored layout: `0x01` (format version) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aos_config::Secret;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const FORMAT_VERSION: u8 = 1;
const KEY_LEN: usize = 32;

/// Why the key could not be used. Messages name the file and the option, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "[power] credential_key_file = {}: cannot read it: {source} (create it with \
         `aos-cloud-manager power-device generate-key`)",
        path.display()
    )]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("[power] credential_key_file = {}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot create the key file {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error(
        "the credential of power device {device} does not open with the key of {key_file} \
         (another key, or a damaged row): set its password again"
    )]
    Undecryptable { device: String, key_file: String },
    #[error("the system random generator failed")]
    Random,
}

/// The credential key. `Debug` shows only where it came from.
pub struct Keyring {
    key: LessSafeKey,
    source: String,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Keyring").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Keyring {
    /// Reads the key file named by `[power] credential_key_file`.
    pub fn from_config(power: &aos_config::PowerSection) -> Result<Keyring, KeyError> {
        Keyring::load(&power.credential_key_file)
    }

    /// Reads a key file: 64 hexadecimal digits, surrounding whitespace allowed. A file that
    /// others may read is accepted with a warning (the operator's call, but worth saying).
    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| KeyError::Unreadable { path: path.to_owned(), source })?;
        let malformed = |reason: &str| KeyError::Malformed { path: path.to_owned(), reason: reason.to_owned() };
        let digits = text.trim();
        if digits.len() != KEY_LEN * 2 {
            return Err(malformed(&format!(
                "expected {} hexadecimal digits (a {KEY_LEN}-byte key), found {} characters",
                KEY_LEN * 2,
                digits.chars().count()
            )));
        }
        let mut key = [0u8; KEY_LEN];
        for (index, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(digits.get(index * 2..index * 2 + 2).unwrap_or("zz"), 16)
                .map_err(|_| malformed("not hexadecimal digits only"))?;
        }
        warn_if_readable_by_others(path);
        Ok(Keyring::from_key_bytes(key, path.display().to_string()))
    }

    /// A keyring from raw key bytes (tests, key rotation tools). `source` names it in errors.
    pub fn from_key_bytes(key: [u8; KEY_LEN], source: impl Into<String>) -> Keyring {
        let unbound =
            UnboundKey::new(&AES_256_GCM, &key).unwrap_or_else(|_| unreachable!("32 bytes is the AES-256 key length"));
        Keyring { key: LessSafeKey::new(unbound), source: source.into() }
    }

    /// Writes a new random key to `path` (which must not exist), readable by its owner only.
    pub fn generate_file(path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut key).map_err(|_| KeyError::Random)?;
        let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
        let create = |source| KeyError::Create { path: path.to_owned(), source };
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(create)?;
        file.write_all(format!("{hex}\n").as_bytes()).map_err(create)?;
        file.sync_all().map_err(create)
    }

    /// Encrypts a device's password for its `secret_ciphertext` column.
    pub fn seal(&self, device_name: &str, password: &Secret<String>) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut buffer = password.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(device_name), &mut buffer)
            .map_err(|_| KeyError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + buffer.len());
        sealed.push(FORMAT_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    /// Decrypts what [`Keyring::seal`] produced for the same device name.
    pub fn open(&self, device_name: &str, sealed: &[u8]) -> Result<Secret<String>, KeyError> {
        let undecryptable =
            || KeyError::Undecryptable { device: device_name.to_owned(), key_file: self.source.clone() };
        let (&version, rest) = sealed.split_first().ok_or_else(undecryptable)?;
        if version != FORMAT_VERSION || rest.len() < NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| undecryptable())?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self.key.open_in_place(nonce, aad(device_name), &mut buffer).map_err(|_| undecryptable())?;
        String::from_utf8(plaintext.to_vec()).map(Secret::new).map_err(|_| undecryptable())
    }
}

fn aad(device_name: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("aos-power-device:{device_name}").into_bytes())
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", metadata.permissions().mode() & 0o777),
            "the power credential key file is readable by others than its owner; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::from_key_bytes([7; 32], "test key")
    }

    #[test]
    fn sealed_credentials_open_only_for_their_device_and_hide_the_plaintext() {
        let password = Secret::new("correct horse battery".to_owned());
        let sealed = keyring().seal("bmc-1", &password).unwrap();
        assert!(!sealed.windows(7).any(|window| window == b"correct"), "no plaintext in the ciphertext");
        assert_eq!(keyring().open("bmc-1", &sealed).unwrap().expose(), "correct horse battery");
        assert!(matches!(keyring().open("bmc-2", &sealed), Err(KeyError::Undecryptable { .. })));
        let other_key = Keyring::from_key_bytes([8; 32], "other");
        assert!(other_key.open("bmc-1", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(keyring().open("bmc-1", &tampered).is_err());
        assert!(keyring().open("bmc-1", &[]).is_err());
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let password = Secret::new("same".to_owned());
        assert_ne!(keyring().seal("bmc", &password).unwrap(), keyring().seal("bmc", &password).unwrap());
    }

    #[test]
    fn generated_key_files_are_private_and_load_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("power.key");
        Keyring::generate_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = Keyring::load(&path).unwrap().seal("d", &Secret::new("x".into())).unwrap();
        assert_eq!(Keyring::load(&path).unwrap().open("d", &sealed).unwrap().expose(), "x");
        assert!(matches!(Keyring::generate_file(&path), Err(KeyError::Create { .. })), "never overwrites a key");
    }

    #[test]
    fn missing_or_malformed_key_files_are_named_with_the_option() {
        let directory = tempfile::tempdir().unwrap();
        let missing = Keyring::load(&directory.path().join("absent.key")).unwrap_err().to_string();
        assert!(missing.contains("[power] credential_key_file") && missing.contains("absent.key"), "{missing}");
        assert!(missing.contains("generate-key"), "{missing}");
        let short = directory.path().join("short.key");
        std::fs::write(&short, "abcd\n").unwrap();
        let error = Keyring::load(&short).unwrap_err().to_string();
        assert!(error.contains("expected 64 hexadecimal digits"), "{error}");
        let not_hex = directory.path().join("nothex.key");
        std::fs::write(&not_hex, "z".repeat(64)).unwrap();
        assert!(Keyring::load(&not_hex).unwrap_err().to_string().contains("hexadecimal"));
        assert_eq!(format!("{:?}", keyring()), "Keyring { source: \"test key\", .. }");
    }
}
