//! The serving process's control socket, `SESSION/control.sock`: what
//! must happen inside the process that serves a view (a checkpoint with
//! the view held still, an undo that reloads the view or replaces the
//! kernel engine's overlay) is asked for here by `wopfs checkpoint` and
//! `wopfs undo` (and the API). One JSON line in, one JSON line out.
//!
//! Who may ask: the session dir is 0700, and the peer's uid must be the
//! server's or root (`SO_PEERCRED`). The socket is bound and reached
//! through `/proc/self/fd/N/control.sock` (N the session dir, opened), so
//! a long state dir path never meets the 108-byte limit of a socket path.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, IoContext, Result};

const SOCKET: &str = "control.sock";

/// How long a client waits for the answer (an undo of a large session
/// copies data back).
const ANSWER_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Copy the layer into checkpoint `id` (`cN`, made by the copy),
    /// sharing unchanged files with checkpoint `prev`.
    Checkpoint { id: String, prev: Option<String> },
    /// Put the live view back to checkpoint `id`.
    Undo { id: String },
}

/// The directory of checkpoint `id` of the session at `session_dir`: only
/// a name `c` + digits, so a request never names a path of its own.
pub fn checkpoint_dir(session_dir: &Path, id: &str) -> Result<PathBuf> {
    let digits = id.strip_prefix('c').unwrap_or("");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 19 {
        return Err(Error::invalid(format!(
            "{id:?} is not a checkpoint id (c1, c2, ...)"
        )));
    }
    Ok(session_dir.join("checkpoints").join(id))
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    value: serde_json::Value,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

pub type Handler = Box<dyn Fn(Request) -> Result<serde_json::Value> + Send + Sync>;

fn open_dir(session_dir: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        session_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", session_dir.display()), e.into()))
}

fn short_path(dir: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd()))
}

/// Serves `handler` on the session's control socket from a thread of its
/// own, for as long as the process lives (the thread ends with it). The
/// socket file stays behind: a later client finds nobody listening
/// (`ask` answers `None`), and the next server replaces it.
pub fn serve(session_dir: &Path, handler: Handler) -> Result<()> {
    let dir = open_dir(session_dir)?;
    let path = session_dir.join(SOCKET);
    // A socket left by a process killed before it could remove it.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("removing {}", path.display()), e))
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(short_path(&dir)).ctx(|| format!("binding {}", path.display()))?;
    drop(dir);
    let me = rustix::process::geteuid().as_raw();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => answer(s, me, &handler),
                    Err(e) => tracing::warn!(error = %e, "control socket: accept failed"),
                }
            }
        })
        .ctx(|| "starting the control thread")?;
    Ok(())
}

fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn answer(stream: UnixStream, me: u32, handler: &Handler) {
    let reply = match peer_uid(&stream) {
        Some(uid) if uid == me || uid == 0 => read_request(&stream).and_then(|req| {
            tracing::info!(?req, uid, "control request");
            handler(req)
        }),
        Some(uid) => Err(Error::policy(format!(
            "uid {uid} may not control this view (only its owner, uid {me}, and root)"
        ))),
        None => Err(Error::policy("the peer of the control socket is unknown")),
    };
    let reply = match reply {
        Ok(value) => Reply {
            ok: true,
            value,
            error: None,
            kind: None,
        },
        Err(e) => {
            tracing::warn!(error = %e, "control request failed");
            Reply {
                ok: false,
                value: serde_json::Value::Null,
                error: Some(e.to_string()),
                kind: Some(kind_name(e.kind()).into()),
            }
        }
    };
    let mut stream = stream;
    if let Ok(mut line) = serde_json::to_vec(&reply) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

fn read_request(stream: &UnixStream) -> Result<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ctx(|| "control socket")?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(stream, 64 * 1024))
        .read_line(&mut line)
        .ctx(|| "reading a control request")?;
    serde_json::from_str(&line).map_err(|e| Error::invalid(format!("bad control request: {e}")))
}

fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::BadRequest => "invalid",
        ErrorKind::Forbidden => "policy",
        ErrorKind::UnknownGrant => "unknown_grant",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Busy => "busy",
        ErrorKind::Internal => "internal",
    }
}

fn error_of(kind: Option<&str>, msg: String) -> Error {
    match kind {
        Some("policy") => Error::policy(msg),
        Some("unknown_grant") => Error::unknown_grant(msg),
        Some("conflict") => Error::conflict(msg),
        Some("busy") => Error::busy(msg),
        Some("invalid") => Error::invalid(msg),
        _ => Error::io(msg, std::io::Error::other("in the serving process")),
    }
}

/// Asks the process serving the session. `Ok(None)`: no process listens
/// (nothing serves the view, or its server died and left the socket).
pub fn ask(session_dir: &Path, req: &Request) -> Result<Option<serde_json::Value>> {
    let dir = match open_dir(session_dir) {
        Ok(d) => d,
        Err(_) => return Ok(None),
    };
    let mut stream = match UnixStream::connect(short_path(&dir)) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ECONNREFUSED)
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(Error::io(
                format!("reaching {}", session_dir.join(SOCKET).display()),
                e,
            ))
        }
    };
    let what = || format!("asking the process serving {}", session_dir.display());
    stream.set_read_timeout(Some(ANSWER_WAIT)).ctx(what)?;
    let mut line = serde_json::to_vec(req).map_err(|e| Error::invalid(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).ctx(what)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).ctx(what)?;
    let reply: Reply = serde_json::from_str(&answer).map_err(|e| {
        Error::invalid(format!(
            "the process serving {} answered {answer:?}: {e}",
            session_dir.display()
        ))
    })?;
    if reply.ok {
        Ok(Some(reply.value))
    } else {
        Err(error_of(
            reply.kind.as_deref(),
            reply.error.unwrap_or_else(|| "failed".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_a_checkpoint_never_a_path() {
        let s = Path::new("/state/sessions/g-1");
        assert_eq!(
            checkpoint_dir(s, "c12").unwrap(),
            Path::new("/state/sessions/g-1/checkpoints/c12")
        );
        for bad in [
            "",
            "c",
            "12",
            "c1/../../x",
            "../c1",
            "c-1",
            "c1 ",
            "c99999999999999999999",
        ] {
            let e = checkpoint_dir(s, bad).unwrap_err().to_string();
            assert!(e.contains("is not a checkpoint id"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn nobody_listening_is_none_and_an_answer_comes_back_whole() {
        let d = tempfile::tempdir().unwrap();
        let req = Request::Undo { id: "c1".into() };
        assert!(ask(d.path(), &req).unwrap().is_none());
        serve(
            d.path(),
            Box::new(|req| match req {
                Request::Undo { id } if id == "c1" => Ok(serde_json::json!({"to": id})),
                _ => Err(Error::busy("processes are inside")),
            }),
        )
        .unwrap();
        assert_eq!(ask(d.path(), &req).unwrap().unwrap()["to"], "c1");
        let other = Request::Undo { id: "c2".into() };
        let e = ask(d.path(), &other).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
        assert!(e.to_string().contains("processes are inside"), "{e}");
    }
}
