//! Every failed request is logged: at `debug` with its operation, inode,
//! name and cause, and louder when the errno means a bug or a disk problem
//! (`warn`: EIO, EUCLEAN) or a full disk or quota (`info`: ENOSPC, EDQUOT).
//! Expected answers (ENOENT, EACCES, ...) cost a level check and nothing
//! else unless debug logging is on.

use std::ffi::OsStr;

use tracing::Level;

use crate::error::Errno;
use crate::view::Error;

/// The level a failure with `errno` is logged at.
pub(super) fn level_of(errno: Errno) -> Level {
    match errno.0 {
        libc::EIO | libc::EUCLEAN => Level::WARN,
        libc::ENOSPC | libc::EDQUOT => Level::INFO,
        _ => Level::DEBUG,
    }
}

/// What a request was about: its operation, inode (or handle) and name.
#[derive(Clone, Copy)]
pub(super) struct Req<'a> {
    pub op: &'static str,
    pub ino: u64,
    pub name: Option<&'a OsStr>,
}

impl Req<'_> {
    pub fn on(op: &'static str, ino: u64) -> Req<'static> {
        Req {
            op,
            ino,
            name: None,
        }
    }

    pub fn named<'a>(op: &'static str, parent: u64, name: &'a OsStr) -> Req<'a> {
        Req {
            op,
            ino: parent,
            name: Some(name),
        }
    }
}

/// Logs a failed request and returns the errno to answer it with.
pub(super) fn failed(req: Req<'_>, e: &Error) -> fuser::Errno {
    let Req { op, ino, name } = req;
    let errno = e.errno();
    // The macros check their level before formatting anything.
    macro_rules! log {
        ($lvl:expr) => {
            tracing::event!(
                $lvl,
                op,
                ino,
                name = name.map(tracing::field::debug),
                errno = ?errno,
                cause = %e.chain(),
                "request failed"
            )
        };
    }
    match level_of(errno) {
        Level::WARN => log!(Level::WARN),
        Level::INFO => log!(Level::INFO),
        _ => log!(Level::DEBUG),
    }
    fuser::Errno::from_i32(errno.0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::view::Context;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs at `info` and above (the daemon's default).
    fn logged_at_info(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn an_eio_is_logged_at_warn_with_its_cause() {
        let cause = std::io::Error::other("the disk is on fire");
        let e = Err::<(), _>(Error::caused_by(Errno::EIO, cause))
            .context("reading overlay object 7")
            .unwrap_err();
        let text = logged_at_info(|| {
            assert_eq!(failed(Req::on("read", 42), &e), fuser::Errno::EIO);
        });
        assert!(text.contains("WARN"), "{text}");
        assert!(
            text.contains("op=\"read\"") && text.contains("ino=42"),
            "{text}"
        );
        assert!(
            text.contains("reading overlay object 7: the disk is on fire"),
            "{text}"
        );
    }

    #[test]
    fn expected_answers_stay_below_info() {
        let e = Error::from(Errno::ENOENT);
        let text = logged_at_info(|| {
            failed(Req::named("unlink", 1, OsStr::new("gone")), &e);
        });
        assert_eq!(text, "");
        assert_eq!(level_of(Errno(libc::EDQUOT)), Level::INFO);
        assert_eq!(level_of(Errno::EACCES), Level::DEBUG);
    }
}
