//! Per-host PXELINUX configuration files in `[pxe] conf_dir`, to boot reserve hosts.
//!
//! PXELINUX looks for `pxelinux.cfg/<UUID>`, then `01-<mac>` (lower case, dash separated),
//! then the IP address in hex, then `default`. We write the `01-<mac>` file for a host that
//! must boot its compute image, and remove it afterwards so the next boot takes the
//! directory's `default` (usually the local disk). Files are written whole (temporary file +
//! rename), so a TFTP server never serves half a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::mac::MacAddress;

/// The file for a host booting the compute image, after `samples/pxelinux.cfg` of bmc-sim.
/// Placeholders: `{node}`, `{mac}` (`52:54:00:a0:00:01`), `{bootif}` (`01-52-54-00-a0-00-01`).
pub const DEFAULT_TEMPLATE: &str = "\
# pxelinux.cfg/{bootif}
# Written by aos-cloud-manager for standby host {node} ({mac}).
DEFAULT compute-node
PROMPT 0
TIMEOUT 50
ONTIMEOUT compute-node

LABEL compute-node
  MENU LABEL Boot compute node image
  KERNEL images/compute-node/vmlinuz
  APPEND initrd=images/compute-node/initrd.img ip=dhcp console=tty0 console=ttyS0,115200n8 aos.node={node}
  IPAPPEND 2

LABEL local
  MENU LABEL Boot from local disk
  LOCALBOOT 0
";

#[derive(Debug, thiserror::Error)]
pub enum PxeError {
    #[error("[pxe] conf_dir = {}: {source}", dir.display())]
    Directory { dir: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("node name {0:?} cannot go into a PXE file (letters, digits, - _ . only)")]
    BadNodeName(String),
}

/// The path of a host's file in `conf_dir`.
pub fn pxe_file_path(conf_dir: &Path, mac: MacAddress) -> PathBuf {
    conf_dir.join(mac.pxelinux_file_name())
}

/// Fills the template's placeholders.
pub fn render_pxe_config(template: &str, node: &str, mac: MacAddress) -> Result<String, PxeError> {
    if node.is_empty() || !node.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(PxeError::BadNodeName(node.to_owned()));
    }
    Ok(template
        .replace("{node}", node)
        .replace("{mac}", &mac.to_string())
        .replace("{bootif}", &mac.pxelinux_file_name()))
}

/// Writes (or replaces) the host's file; returns its path. The directory must exist (it is
/// the TFTP server's; creating it here would hide a wrong `conf_dir`).
pub fn write_pxe_config(conf_dir: &Path, mac: MacAddress, contents: &str) -> Result<PathBuf, PxeError> {
    if !conf_dir.is_dir() {
        return Err(PxeError::Directory {
            dir: conf_dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not an existing directory"),
        });
    }
    let path = pxe_file_path(conf_dir, mac);
    let temporary = conf_dir.join(format!(".{}.tmp-{}", mac.pxelinux_file_name(), std::process::id()));
    let write = |source| PxeError::Write { path: path.clone(), source };
    {
        let mut file = std::fs::File::create(&temporary).map_err(write)?;
        file.write_all(contents.as_bytes()).map_err(write)?;
        file.sync_all().map_err(write)?;
    }
    // TFTP servers run as their own user: the file must be world-readable.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644)).map_err(write)?;
    std::fs::rename(&temporary, &path).map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        PxeError::Write { path: path.clone(), source }
    })?;
    tracing::info!(path = %path.display(), %mac, "PXE configuration written");
    Ok(path)
}

/// Removes the host's file; Ok(false) when there was none (idempotent).
pub fn remove_pxe_config(conf_dir: &Path, mac: MacAddress) -> Result<bool, PxeError> {
    let path = pxe_file_path(conf_dir, mac);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), %mac, "PXE configuration removed");
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PxeError::Remove { path, source }),
    }
}
