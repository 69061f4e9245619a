//! The API socket: private unless widened on purpose, one server per
//! socket, removed only by the server that owns it.
//!
//! A server first takes an exclusive `flock` on `SOCKET.lock` (beside the
//! socket, never removed: removing a lock file races the next server) and
//! writes its pid there; a second server fails naming the socket and that
//! pid. Holding the lock, a socket left at the path is stale and replaced;
//! anything else at the path is refused, never removed. The socket is bound
//! in a fresh 0700 directory beside it, given its group and mode there,
//! then renamed into place, so it is never reachable with a wider mode. On drop the socket is removed
//! if it is still the one this server bound.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The socket's mode unless `--socket-mode` says otherwise: the owner only.
pub const DEFAULT_MODE: u32 = 0o600;

/// The bound socket's owner: the lock, and the socket removed on drop.
pub struct Socket {
    path: PathBuf,
    /// (dev, ino) of the socket this server bound.
    id: (u64, u64),
    _lock: File,
}

/// `SOCKET.lock`, beside the socket.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    s.into()
}

impl Socket {
    /// Takes the socket's lock, then binds it with `mode`, owned by
    /// `group` when given.
    pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<(UnixListener, Socket)> {
        let lock = take_lock(path)?;
        match std::fs::symlink_metadata(path) {
            // Its server is gone: it held the lock we now hold.
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
                .ctx(|| format!("removing the stale socket {}", path.display()))?,
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("checking {}", path.display()), e)),
        }
        // Bound inside a fresh 0700 directory, given its group and mode,
        // then renamed into place: never reachable with a wider mode, not
        // even for a moment (and no process-wide umask to change).
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".wopfs-")
            .tempdir_in(parent)
            .ctx(|| format!("making a private directory in {}", parent.display()))?;
        let staged = tmp.path().join("s");
        let listener = UnixListener::bind(&staged).ctx(|| format!("binding {}", path.display()))?;
        if let Some(g) = group {
            std::os::unix::fs::lchown(&staged, None, Some(g))
                .ctx(|| format!("giving {} to group {g}", path.display()))?;
        }
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
            .ctx(|| format!("setting the mode of {}", path.display()))?;
        let cwd = rustix::fs::CWD;
        rustix::fs::renameat_with(cwd, &staged, cwd, path, rustix::fs::RenameFlags::NOREPLACE)
            .map_err(|e| {
                Error::io(
                    format!("placing the socket at {}", path.display()),
                    e.into(),
                )
            })?;
        let meta = std::fs::symlink_metadata(path).ctx(|| format!("{}", path.display()))?;
        let sock = Socket {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            _lock: lock,
        };
        Ok((listener, sock))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Only the socket this server bound: never one that replaced it.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn take_lock(socket: &Path) -> Result<File> {
    let path = lock_path(socket);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .ctx(|| format!("opening the lock {}", path.display()))?;
    use rustix::fs::{flock, FlockOperation};
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("another wopfs serve (pid {pid})"),
                Err(_) => "another wopfs serve".to_string(),
            };
            return Err(Error::invalid(format!(
                "{holder} is already serving on {} (it holds {}); stop it or choose another --socket",
                socket.display(),
                path.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("locking {}", path.display()), e.into())),
    }
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| writeln!(f, "{}", std::process::id()))
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(f)
}

/// Parses `--socket-mode`: octal permission bits (`0660`, `660`, `0o660`).
pub fn parse_mode(s: &str) -> std::result::Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        Ok(_) => Err(format!(
            "{s} has bits beyond 0777 (only permission bits may be set)"
        )),
        Err(_) => Err(format!("{s} is not an octal mode such as 0660")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal_permission_bits() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o666"), Ok(0o666));
        assert!(parse_mode("4755").is_err());
        assert!(parse_mode("0689").is_err());
        assert!(parse_mode("rw").is_err());
        assert!(parse_mode("").is_err());
    }

    #[test]
    fn one_server_per_socket_and_only_the_owner_removes_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("api.sock");
        let first = Socket::bind(&p, DEFAULT_MODE, None).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        let e = match Socket::bind(&p, DEFAULT_MODE, None) {
            Ok(_) => panic!("a second server bound the socket"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(p.exists(), "the refused server removed the socket");
        drop(first);
        assert!(!p.exists());
        // A stale socket is replaced; anything else is refused, untouched.
        let stale = UnixListener::bind(&p).unwrap();
        drop(stale);
        let again = Socket::bind(&p, 0o660, None).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o660
        );
        drop(again);
        std::fs::write(&p, "not a socket").unwrap();
        let e = Socket::bind(&p, DEFAULT_MODE, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "not a socket");
    }
}
