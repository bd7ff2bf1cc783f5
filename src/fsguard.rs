//! Guarding the files keyward trusts and the secrets it holds: private directories made 0700
//! whatever the umask, a refusal to work in a directory others can write to, no symbolic link
//! followed inside the authority's directory, a warning for secret files others can read, and
//! no core dump of a process holding secrets.
//!
//! The system calls come from `rustix` (already in the build through `tempfile`): safe
//! wrappers for `setrlimit`, `prctl(PR_SET_DUMPABLE)` and `O_NOFOLLOW`, where `libc` would need
//! `unsafe` blocks this crate denies.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A directory or file keyward will not trust.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", .path.display())]
pub struct Unsafe {
    /// The path.
    pub path: PathBuf,
    /// Why, and what to do.
    pub reason: String,
}

fn unsafe_path(path: &Path, reason: String) -> Unsafe {
    Unsafe {
        path: path.to_path_buf(),
        reason,
    }
}

/// Creates `dir` (and missing parents) with the last component 0700, whatever the umask; an
/// existing directory is checked with [`check_private_dir`] instead.
pub fn create_private_dir(dir: &Path) -> Result<(), Unsafe> {
    if std::fs::symlink_metadata(dir).is_ok() {
        return check_private_dir(dir);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| unsafe_path(parent, format!("cannot create it: {e}")))?;
    }
    DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| unsafe_path(dir, format!("cannot create it: {e}")))?;
    // The umask applies to mkdir's mode; chmod does not consult it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| unsafe_path(dir, format!("cannot make it private: {e}")))?;
    Ok(())
}

/// Refuses a directory that is a symbolic link, not a directory, or writable by its group or
/// others (anyone who can write there could replace the state keyward trusts).
pub fn check_private_dir(dir: &Path) -> Result<(), Unsafe> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| unsafe_path(dir, format!("cannot read it: {e}")))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_path(
            dir,
            "is a symbolic link; keyward does not follow links to its state — name the directory itself".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(unsafe_path(dir, "is not a directory".into()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_path(
            dir,
            format!(
                "is writable by its group or others (mode {mode:04o}): they could change the state keyward trusts; make it private with `chmod 700 {}` and check its contents",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses `dir/name` when it is a symbolic link or a directory (it must be a plain file or
/// absent): checked before a file of the authority's directory is opened.
pub fn check_plain_file(dir: &Path, name: &str) -> Result<(), Unsafe> {
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Err(_) => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(unsafe_path(
            &path,
            "is a symbolic link; keyward never follows links inside its state directory — remove it and restore the file from a trusted backup".into(),
        )),
        Ok(m) if !m.is_file() => Err(unsafe_path(
            &path,
            "is not a plain file; remove it and restore the file from a trusted backup".into(),
        )),
        Ok(_) => Ok(()),
    }
}

/// Opens (creating, 0600) a file without following a symbolic link (`O_NOFOLLOW`).
pub fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    let nofollow = i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nofollow)
        .open(path)
}

/// A directory keyward writes secret files into (temporary keys, PINs), opened once and checked:
/// not a symbolic link, a directory of this user's (or root's), writable by no one else — so
/// no one else can plant a link or a file where a secret goes. Every file is then opened
/// relative to that open directory, never following a link, and a temporary file is created
/// new (`O_EXCL`) before it is renamed into place.
#[derive(Debug)]
pub struct SecretDir {
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl SecretDir {
    /// Opens `dir` (creating it and missing parents, the last one 0700, when absent) and checks
    /// it as described on [`SecretDir`].
    pub fn open(dir: &Path) -> Result<SecretDir, Unsafe> {
        use rustix::fs::{Mode, OFlags};
        if std::fs::symlink_metadata(dir).is_err() {
            create_private_dir(dir)?;
        }
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            let why = if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                "is a symbolic link; keyward writes secret files only into a directory named by its own path — name the directory itself".to_string()
            } else {
                format!("cannot open it as a directory: {e}")
            };
            unsafe_path(dir, why)
        })?;
        let st =
            rustix::fs::fstat(&fd).map_err(|e| unsafe_path(dir, format!("cannot read it: {e}")))?;
        let me = rustix::process::geteuid().as_raw();
        if st.st_uid != me && st.st_uid != 0 {
            return Err(unsafe_path(
                dir,
                format!(
                    "belongs to another user (uid {}), who could replace the secret files keyward writes there; use a directory of your own (a new one is made 0700)",
                    st.st_uid
                ),
            ));
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(unsafe_path(
                dir,
                format!(
                    "is writable by its group or others (mode {mode:04o}): they could plant a symbolic link or a file where keyward writes a secret (even with the sticky bit, they could take the names first); nothing was written — use a private directory (`chmod 700 {}`, or name a new one) and check what is in it",
                    dir.display()
                ),
            ));
        }
        Ok(SecretDir {
            fd,
            path: dir.to_path_buf(),
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts `bytes` in `DIR/name` (mode 0600): a temporary file `.NAME.tmp` created new and
    /// synced, then renamed over `name` (a link at `name` is replaced, never followed). A
    /// `.NAME.tmp` left by an interrupted run is removed only when it is a plain file of this
    /// user's; anything else there is refused. The directory is not synced ([`Self::sync`]).
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, Unsafe> {
        use rustix::fs::{AtFlags, FileType, Mode, OFlags};
        self.check_name(name)?;
        let tmp = format!(".{name}.tmp");
        let tmp_path = self.path.join(&tmp);
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let create =
            || rustix::fs::openat(&self.fd, tmp.as_str(), flags, Mode::from_raw_mode(0o600));
        let fd = match create() {
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(&self.fd, tmp.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| unsafe_path(&tmp_path, format!("cannot read it: {e}")))?;
                let ours = st.st_uid == rustix::process::geteuid().as_raw();
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || !ours {
                    return Err(unsafe_path(
                        &tmp_path,
                        "is in the way of a secret file and is not a plain file of yours (a symbolic link, or another user's): keyward will not write a secret through it; nothing was written to it — find out who put it there, remove it and run again".into(),
                    ));
                }
                // A temporary file of an interrupted earlier run.
                rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty())
                    .map_err(|e| unsafe_path(&tmp_path, format!("cannot remove this leftover: {e}")))?;
                create()
            }
            other => other,
        }
        .map_err(|e| unsafe_path(&tmp_path, format!("cannot create it: {e}")))?;
        let mut f = std::fs::File::from(fd);
        std::io::Write::write_all(&mut f, bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| unsafe_path(&tmp_path, format!("cannot write it: {e}")))?;
        drop(f);
        let path = self.path.join(name);
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)
            .map_err(|e| unsafe_path(&path, format!("cannot rename {tmp} to it: {e}")))?;
        Ok(path)
    }

    /// Opens the plain file `DIR/name` (no link followed): for reading, or for appending when
    /// `append`. `None` when it does not exist.
    pub fn open_file(&self, name: &str, append: bool) -> Result<Option<std::fs::File>, Unsafe> {
        use rustix::fs::{FileType, Mode, OFlags};
        self.check_name(name)?;
        let path = self.path.join(name);
        let access = if append {
            OFlags::WRONLY | OFlags::APPEND
        } else {
            OFlags::RDONLY
        };
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            access | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(unsafe_path(
                    &path,
                    "is a symbolic link: keyward will not read or write a secret through it; find out who put it there and remove it".into(),
                ))
            }
            Err(e) => return Err(unsafe_path(&path, format!("cannot open it: {e}"))),
        };
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| unsafe_path(&path, format!("cannot read it: {e}")))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(unsafe_path(
                &path,
                "is not a plain file; remove it and run again".into(),
            ));
        }
        Ok(Some(std::fs::File::from(fd)))
    }

    fn check_name(&self, name: &str) -> Result<(), Unsafe> {
        if is_file_name(name) {
            Ok(())
        } else {
            Err(unsafe_path(
                &self.path,
                format!(
                    "{name:?} is not a file name in it (a '/', a control character, or . or ..)"
                ),
            ))
        }
    }

    /// Syncs the directory (the renames in it).
    pub fn sync(&self) -> Result<(), Unsafe> {
        rustix::fs::fsync(&self.fd)
            .map_err(|e| unsafe_path(&self.path, format!("cannot sync it: {e}")))
    }
}

/// Whether `name` names a file directly inside a directory: not empty, not `.` or `..`, no `/`,
/// no control character.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// Warns when a file holding a secret (a PIN, a temporary key) can be read by its group or
/// others.
pub fn warn_if_readable(path: &Path, what: &str) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.mode() & 0o777;
        if meta.is_file() && mode & 0o044 != 0 {
            log::warn!(
                "the {what} file {} is readable by others (mode {mode:04o}); make it private with `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

/// No core dump of this process, and no debugger attaching to it as the same user: the soft
/// `RLIMIT_CORE` to 0 and `PR_SET_DUMPABLE` to 0. Failures are logged, not fatal (a sandbox may
/// refuse either; the secrets are then as safe as before).
pub fn harden_process() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let hard = rustix::process::getrlimit(Resource::Core).maximum;
    if let Err(e) = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: hard,
        },
    ) {
        log::debug!("cannot turn core dumps off (RLIMIT_CORE): {e}");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        log::debug!("cannot mark the process not dumpable (PR_SET_DUMPABLE): {e}");
    }
}

/// Locks a secret's bytes into RAM where the OS allows (`mlock`; over `RLIMIT_MEMLOCK` it is
/// logged and left unlocked). The pages stay locked until the process ends, which for a
/// command-line run is moments later.
pub fn lock_in_memory(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    match region::lock(bytes.as_ptr(), bytes.len()) {
        Ok(guard) => std::mem::forget(guard),
        Err(e) => log::debug!("cannot lock a secret in memory: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_0700_whatever_the_umask_and_a_shared_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = check_private_dir(&d).unwrap_err();
        assert!(e.reason.contains("writable by its group"), "{e}");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(check_private_dir(&link)
            .unwrap_err()
            .reason
            .contains("symbolic link"));
        std::os::unix::fs::symlink("/etc/passwd", d.join("f")).unwrap();
        assert!(check_plain_file(&d, "f").is_err());
        assert!(open_nofollow(&d.join("f")).is_err());
        assert!(check_plain_file(&d, "absent").is_ok());
    }

    #[test]
    fn a_secret_dir_writes_new_files_and_follows_no_link() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("keys");
        let dir = SecretDir::open(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        let victim = t.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        // A link at the temporary name: refused, the victim untouched.
        std::os::unix::fs::symlink(&victim, d.join(".a.tmp")).unwrap();
        let e = dir.write_file("a", b"secret").unwrap_err();
        assert!(e.reason.contains("is in the way"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        std::fs::remove_file(d.join(".a.tmp")).unwrap();
        // A link at the final name is replaced, not followed.
        std::os::unix::fs::symlink(&victim, d.join("a")).unwrap();
        let p = dir.write_file("a", b"secret").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "secret");
        assert_eq!(std::fs::symlink_metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // Reading or appending through a link: refused.
        std::os::unix::fs::symlink(&victim, d.join("b")).unwrap();
        assert!(dir.open_file("b", true).is_err());
        assert!(dir.open_file("absent", false).unwrap().is_none());
        // Names that are not a file in it.
        for bad in ["../x", "a/b", "..", ""] {
            assert!(dir.write_file(bad, b"x").is_err(), "{bad}");
        }
        // Shared or linked directories.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(SecretDir::open(&d)
            .unwrap_err()
            .reason
            .contains("mode 1777"));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(SecretDir::open(&link)
            .unwrap_err()
            .reason
            .contains("symbolic link"));
    }
}
