//! Files only the service's own user can read.
//!
//! The switch's store, a provider's pending state and the development
//! outbox hold transactions, customer details and OTPs: nobody else on the
//! machine has any business reading them. A data directory is created 0700
//! and the files in it are kept 0600; binaries also set the process's umask
//! to 077 first thing ([`restrict_new_files`]), so files a database creates
//! later are born private too. A directory the host created with looser
//! permissions is used as it is (the host may have reasons), but the caller
//! is told, to warn about it.

use std::io;
use std::path::{Path, PathBuf};

/// Permission bits of a private directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Permission bits of a private file.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Makes every file and directory this process creates from now on
/// private to its user (umask 077). Binaries call it before anything else.
pub fn restrict_new_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// What [`secure_data_dir`] found that it left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseDirectory {
    pub path: PathBuf,
    /// The directory's permission bits.
    pub mode: u32,
}

impl std::fmt::Display for LooseDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} can be entered by other users (mode {:o}); `chmod 700` it",
            self.path.display(),
            self.mode
        )
    }
}

/// Creates `dir` (and missing parents) readable by this user only, or,
/// when it exists, tightens every file inside it to 0600 and every
/// directory below it to 0700. Returns the directory itself when it exists
/// with looser permissions, which it leaves as the host made them.
pub fn secure_data_dir(dir: &Path) -> io::Result<Option<LooseDirectory>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR_MODE)
                .create(dir)?;
            return Ok(None);
        }
        tighten_below(dir)?;
        Ok(
            loose_mode(&std::fs::metadata(dir)?).map(|mode| LooseDirectory {
                path: dir.to_owned(),
                mode,
            }),
        )
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)?;
        Ok(None)
    }
}

/// The permission bits of what `metadata` describes when its group or
/// others may use it at all.
#[cfg(unix)]
pub fn loose_mode(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// [`secure_data_dir`], logging what it leaves loose; for binaries and
/// stores that open a data directory at start-up.
pub fn secure_data_dir_or_warn(dir: &Path) -> io::Result<()> {
    if let Some(loose) = secure_data_dir(dir)? {
        tracing::warn!("{loose}");
    }
    Ok(())
}

#[cfg(unix)]
fn tighten_below(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        // Symbolic links are not followed: what they point to is not ours.
        if file_type.is_symlink() {
            continue;
        }
        let wanted = if file_type.is_dir() {
            PRIVATE_DIR_MODE
        } else {
            PRIVATE_FILE_MODE
        };
        let path = entry.path();
        if let Some(mode) = loose_mode(&entry.metadata()?) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & wanted))?;
        }
        if file_type.is_dir() {
            tighten_below(&path)?;
        }
    }
    Ok(())
}

/// Opens `path` for appending, creating it 0600 (and its directory 0700)
/// if it does not exist, and tightening it to 0600 if it does. It blocks,
/// for the few system calls on a local file that takes.
pub fn open_private_append(path: &Path) -> io::Result<std::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            secure_data_dir(parent)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE_MODE);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Some(mode) = loose_mode(&file.metadata()?) {
            file.set_permissions(std::fs::Permissions::from_mode(mode & PRIVATE_FILE_MODE))?;
        }
    }
    Ok(file)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_data_directory_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        assert_eq!(secure_data_dir(&dir).unwrap(), None);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
    }

    #[test]
    fn files_inside_are_tightened_and_a_loose_directory_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::write(dir.join("db"), b"x").unwrap();
        std::fs::write(dir.join("blobs/1"), b"x").unwrap();
        std::fs::write(dir.join("read-only"), b"x").unwrap();
        for (path, mode) in [
            ("", 0o755),
            ("blobs", 0o777),
            ("db", 0o644),
            ("blobs/1", 0o666),
            ("read-only", 0o444),
        ] {
            std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        let loose = secure_data_dir(&dir).unwrap().expect("reported");
        assert_eq!(loose.mode, 0o755);
        assert!(loose.to_string().contains("chmod 700"));
        assert_eq!(mode(&dir), 0o755, "the host's own directory is left alone");
        assert_eq!(mode(&dir.join("blobs")), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o600);
        assert_eq!(mode(&dir.join("blobs/1")), 0o600);
        // Tightening never adds a permission the file did not have.
        assert_eq!(mode(&dir.join("read-only")), 0o400);
    }

    #[test]
    fn an_appended_file_is_created_private_or_made_so() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("out/outbox.jsonl");
        drop(open_private_append(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&root.path().join("out")), 0o700);
        let old = root.path().join("old.jsonl");
        std::fs::write(&old, b"{}\n").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_private_append(&old).unwrap());
        assert_eq!(mode(&old), 0o600);
    }
}
