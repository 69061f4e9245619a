//! Error types: `Error` for commands (one clear sentence each, and its
//! kind), `Errno` for filesystem requests (carried from the core up to the
//! FUSE reply inside `view::Error`).

use std::fmt;
use std::io;

/// A command-level failure. Its `Display` is the one sentence printed to
/// stderr; its [`kind`](Error::kind) is what the control API answers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request violates the policy; the message names the rule and the numbers.
    #[error("{0}")]
    Policy(String),
    /// Bad input from the user (flags, files, grant ids, mountpoints).
    #[error("{0}")]
    Invalid(String),
    /// No such grant (or none the caller may see).
    #[error("{0}")]
    UnknownGrant(String),
    /// The state of things refuses it: the host changed since the agent
    /// saw it, or the session has ended.
    #[error("{0}")]
    Conflict(String),
    /// Another process holds the session (a serving view, a commit): retry later.
    #[error("{0}")]
    Busy(String),
    /// An I/O failure, with what was being done and to which path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// What kind of failure an [`Error`] is, for those who answer it (the
/// control API maps each to an HTTP status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    /// The policy, or the caller's own host permissions, refuse it.
    Forbidden,
    UnknownGrant,
    Conflict,
    Busy,
    /// Anything else (I/O): the server's own failure.
    Internal,
}

impl Error {
    pub fn policy(msg: impl Into<String>) -> Self {
        Error::Policy(msg.into())
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub fn unknown_grant(msg: impl Into<String>) -> Self {
        Error::UnknownGrant(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Error::Conflict(msg.into())
    }
    pub fn busy(msg: impl Into<String>) -> Self {
        Error::Busy(msg.into())
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Policy(_) => ErrorKind::Forbidden,
            Error::Invalid(_) => ErrorKind::BadRequest,
            Error::UnknownGrant(_) => ErrorKind::UnknownGrant,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Busy(_) => ErrorKind::Busy,
            // The caller's own host permissions refused it (the host tree
            // itself, say): theirs to fix, not the server's failure.
            Error::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                ErrorKind::Forbidden
            }
            Error::Io { .. } => ErrorKind::Internal,
        }
    }
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a context sentence to I/O results: `fs::read(p).ctx(|| format!("reading {p}"))`.
pub trait IoContext<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

/// A POSIX error number answered to a filesystem request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EPERM: Errno = Errno(libc::EPERM);

    /// Maps a host I/O error to the errno the view answers. Errors that would
    /// reveal how the host is laid out (a symlink planted in a path, an escape
    /// attempt) answer ENOENT, as if the name did not exist.
    pub fn from_host(err: &io::Error) -> Errno {
        match err.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => Errno::ENOENT,
            Some(n) => Errno(n),
            None => Errno::EIO,
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}
