//! The data directory is private: it holds the CA's private key (inside the sled store), the
//! local admin's key and every token hash, so it is 0700 and every file the manager keeps in it
//! is 0600.
//!
//! ```text
//!   start ─▶ no store yet? ─ yes ─▶ create / chmod 0700
//!                    │ no
//!                    ▼
//!            dir mode & 0o077 == 0, and every file of ours (store/**, *.pem, listen.addr) too?
//!                    ├─ yes ─▶ umask 0o077 (so sled's later segment and snapshot files are 0600)
//!                    └─ no ──▶ refuse to start, naming the path and the chmod that fixes it
//! ```
//!
//! Files other programs put there (a test harness's log, `user create --out` output) are theirs
//! and not checked.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Mode of the data directory and of directories inside the store.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the manager writes into its data directory.
pub const FILE_MODE: u32 = 0o600;

/// Files at the top of the data directory that the manager writes (the store is a directory).
pub const OWN_FILES: &[&str] = &[
    "ca.pem",
    "local-admin.pem",
    "local-admin-key.pem",
    "listen.addr",
];

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    #[error(
        "{path} has mode {mode:o}, readable by other local users; it holds the CA key: run \
         `chmod -R go-rwx {path}` (or `chmod 700` on the directory) and start again"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateDirError + '_ {
    move |source| PrivateDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (0700) when missing, tightens it while it holds no store yet, and otherwise checks that it and
/// every file of ours in it deny group and other; then sets the process umask to 0o077 so every
/// file created later (sled's included) is private too.
///
/// Errors: [`PrivateDirError::TooOpen`] naming the first path that is looser.
pub fn prepare(dir: &Path) -> Result<(), PrivateDirError> {
    // Files created from here on (the directory itself included) are private.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Before the first store there is no secret to protect yet: make the directory private
    // (it may have been made by a tool or a volume mount with a wider mode).
    if !crate::server::store_path(dir).exists() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(io(dir))?;
        return Ok(());
    }
    check(dir)
}

/// Checks `dir`, its store (recursively) and [`OWN_FILES`]: none may grant group or other.
pub fn check(dir: &Path) -> Result<(), PrivateDirError> {
    check_one(dir)?;
    for name in OWN_FILES {
        let path = dir.join(name);
        if path.exists() {
            check_one(&path)?;
        }
    }
    let store = crate::server::store_path(dir);
    if store.exists() {
        check_tree(&store)?;
    }
    Ok(())
}

fn check_tree(path: &Path) -> Result<(), PrivateDirError> {
    check_one(path)?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io(path))? {
            check_tree(&entry.map_err(io(path))?.path())?;
        }
    }
    Ok(())
}

fn check_one(path: &Path) -> Result<(), PrivateDirError> {
    let mode = std::fs::symlink_metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateDirError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn a_new_directory_is_private_and_a_loose_file_is_named()
    -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
        prepare(&dir)?;
        assert_eq!(mode(&dir), 0o700);
        let key = dir.join("local-admin-key.pem");
        std::fs::write(&key, "k")?;
        assert_eq!(mode(&key), 0o600, "umask applies to files created later");
        std::fs::create_dir(dir.join("store"))?;
        prepare(&dir)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
        let err = prepare(&dir).map_err(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_err_and(|m| m.contains("local-admin-key.pem") && m.contains("644")),
            "{err:?}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let err = prepare(&dir).map_err(|e| e.to_string());
        assert!(err.is_err_and(|m| m.contains("755")));
        Ok(())
    }
}
