//! What a `setattr` asks for, and the small pieces every upper layer uses
//! to apply it: times as the kernel wants them, clearing set-id bits, and
//! an owner change an unprivileged daemon may not make.

use std::time::SystemTime;

use rustix::fs::{self as rfs, Timespec, Timestamps};

use super::Result;

/// The caller of a request: new entries belong to them.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// A time to set: a given instant or "now".
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    At(SystemTime),
    Now,
}

/// The attribute changes of one `setattr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl SetAttr {
    pub(super) fn changes_nothing(&self) -> bool {
        let SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        } = self;
        mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none()
            && atime.is_none()
            && mtime.is_none()
    }
}

pub(super) fn timespec(t: SetTime) -> Timespec {
    match t {
        SetTime::Now => Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_NOW,
        },
        SetTime::At(t) => {
            let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as _,
            }
        }
    }
}

pub(super) const OMIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: rfs::UTIME_OMIT,
};

pub(super) fn timestamps(set: SetAttr) -> Timestamps {
    Timestamps {
        last_access: set.atime.map_or(OMIT, timespec),
        last_modification: set.mtime.map_or(OMIT, timespec),
    }
}

/// Clears S_ISUID, and S_ISGID when group-execute is set (otherwise it
/// marks mandatory locking and stays), on an open file.
pub(super) fn clear_setid(file: &std::fs::File) -> Result<()> {
    let st = rfs::fstat(file)?;
    let mut mode = st.st_mode & 0o7777;
    let before = mode;
    mode &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    if mode != before {
        rfs::fchmod(file, rfs::Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

/// An unprivileged daemon cannot give entries away; they stay its own.
pub(super) fn give_away(r: rustix::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(rustix::io::Errno::PERM) => Ok(()),
        other => other.map_err(Into::into),
    }
}
