//! The error of a filesystem request: the errno the kernel is answered,
//! and why (what was being done, and the I/O error underneath), so a
//! failure the agent sees as a bare `EIO` leaves its cause in the log.
//!
//! Expected answers (`ENOENT`, `EACCES`, `EROFS`, ...) are made from an
//! [`Errno`] alone and allocate nothing.

use std::borrow::Cow;
use std::fmt;
use std::io;

use crate::error::Errno;

pub type Result<T, E = Error> = std::result::Result<T, E>;

type Cause = Box<dyn std::error::Error + Send + Sync>;

pub struct Error {
    errno: Errno,
    /// What was being done, when it says more than the errno.
    context: Option<Cow<'static, str>>,
    cause: Option<Cause>,
}

impl Error {
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// `errno`, caused by `cause` (kept for the log, never shown to the agent).
    pub fn caused_by(errno: Errno, cause: impl Into<Cause>) -> Error {
        Error {
            errno,
            context: None,
            cause: Some(cause.into()),
        }
    }

    /// Says what was being done; the errno stays. Context added to an
    /// error that has some already wraps it, so the chain reads outside in.
    pub fn context(self, what: impl Into<Cow<'static, str>>) -> Error {
        if self.context.is_none() {
            return Error {
                context: Some(what.into()),
                ..self
            };
        }
        Error {
            errno: self.errno,
            context: Some(what.into()),
            cause: Some(Box::new(self)),
        }
    }

    /// Why, on one line: the context and the causes, outside in
    /// (`reading overlay object 7: No such file or directory (os error
    /// 2)`), or the errno alone when that is all there is.
    pub fn chain(&self) -> Chain<'_> {
        Chain(self)
    }
}

impl From<Errno> for Error {
    fn from(errno: Errno) -> Error {
        Error {
            errno,
            context: None,
            cause: None,
        }
    }
}

/// The errno from the I/O error (see [`Errno::from_host`]); the I/O error
/// is kept as the cause.
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::caused_by(Errno::from_host(&e), e)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        io::Error::from(e).into()
    }
}

impl PartialEq<Errno> for Error {
    fn eq(&self, other: &Errno) -> bool {
        self.errno == *other
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.context {
            Some(c) => f.write_str(c),
            None => write!(f, "{:?}", self.errno),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.errno)?;
        if self.context.is_some() || self.cause.is_some() {
            write!(f, " ({})", self.chain())?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Displays an error with its errno, context and causes.
pub struct Chain<'a>(&'a Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let mut written = false;
        let mut put = |f: &mut fmt::Formatter<'_>, part: &dyn fmt::Display| {
            let sep = if written { ": " } else { "" };
            written = true;
            write!(f, "{sep}{part}")
        };
        if let Some(c) = &e.context {
            put(f, c)?;
        }
        let mut next = std::error::Error::source(e);
        while let Some(cause) = next {
            // A wrapped request error adds its context; its errno is ours.
            match cause.downcast_ref::<Error>() {
                Some(inner) => {
                    if let Some(c) = &inner.context {
                        put(f, c)?;
                    }
                }
                None => put(f, cause)?,
            }
            next = cause.source();
        }
        if !written {
            write!(f, "{:?}", e.errno)?;
        }
        Ok(())
    }
}

/// `.context("…")` on any result whose error converts to [`Error`].
pub trait Context<T> {
    fn context(self, what: &'static str) -> Result<T>;
    fn with_context<S: Into<Cow<'static, str>>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &'static str) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }

    fn with_context<S: Into<Cow<'static, str>>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_cause_and_context_reads_outside_in() {
        let io = io::Error::from_raw_os_error(libc::ENOENT);
        let e = Error::from(io)
            .context("opening overlay object 7")
            .context("copying up src/a.py");
        assert_eq!(e, Errno::ENOENT);
        let text = e.chain().to_string();
        assert!(
            text == "copying up src/a.py: opening overlay object 7: No such file or directory (os error 2)",
            "{text}"
        );
    }

    #[test]
    fn escapes_answer_enoent_but_keep_what_happened() {
        let e = Error::from(rustix::io::Errno::LOOP);
        assert_eq!(e.errno(), Errno::ENOENT);
        assert!(e.chain().to_string().contains("symbolic links"), "{e:?}");
    }

    #[test]
    fn a_bare_errno_has_no_cause() {
        let e = Error::from(Errno::EROFS);
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(e.chain().to_string(), format!("{:?}", Errno::EROFS));
    }
}
