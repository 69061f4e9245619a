//! Attributes the view answers, built from host `lstat` results, and the
//! entries that carry them to the kernel with how long it may cache them.

use std::ops::Deref;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::Stat;

use crate::tree::{Ino, Kind};

/// Size reported for every directory: the real size would hint at how many
/// (possibly denied) entries the host directory holds.
pub const DIR_SIZE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub blksize: u32,
    /// The daemon owns it (an overlay object): safe to cache long.
    pub owned: bool,
}

/// Attributes and how long the kernel may cache them: the answer to
/// lookup, getattr, setattr and every call that makes an entry. It reads
/// as its attributes (`entry.size`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry {
    pub attr: Attr,
    /// How long the attributes may be cached.
    pub ttl: Duration,
    /// How long the name may be cached as leading to this inode (FUSE's
    /// entry timeout), never shorter than `ttl`: long where the view's
    /// names cannot change (see `View::entry`).
    pub name_ttl: Duration,
}

impl Deref for Entry {
    type Target = Attr;
    fn deref(&self) -> &Attr {
        &self.attr
    }
}

/// The answer to a lookup: the entry, or a name the kernel may remember
/// as absent for `ttl` instead of asking again (builds and imports probe
/// many absent names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lookup {
    Found(Entry),
    Absent { ttl: Duration },
}

/// A timestamp from `stat`; absurd values (a host file may carry any) are
/// clamped instead of overflowing.
fn time(secs: i64, nsec: i64) -> SystemTime {
    let nsec = Duration::new(0, nsec.clamp(0, 999_999_999) as u32);
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
}

/// The kind of a host entry, if the view can show it.
/// The attributes a listing gives `.` and `..`: only the number and the
/// type. The kernel ignores the rest (readdirplus never makes entries for
/// them, readdir carries none), as libfuse's passthrough_ll relies on; so a
/// listing costs no host stat and no count of subdirectories for them.
pub fn dot(ino: Ino) -> Attr {
    Attr {
        ino,
        kind: Kind::Dir,
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        blksize: 0,
        owned: false,
    }
}

pub fn kind_of(st: &Stat) -> Option<Kind> {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Some(Kind::Dir),
        libc::S_IFREG => Some(Kind::File),
        libc::S_IFLNK => Some(Kind::Symlink),
        _ => None,
    }
}

/// Attributes of view node `ino` from the host's `st`, with the link count
/// the view computes (`nlink`: a directory's subdirectories, a file's names
/// in the view; never the host's). Directories get a fixed size.
pub fn from_stat(ino: Ino, kind: Kind, st: &Stat, nlink: u32) -> Attr {
    let (size, blocks) = match kind {
        Kind::Dir => (DIR_SIZE, DIR_SIZE / 512),
        _ => (st.st_size as u64, st.st_blocks as u64),
    };
    Attr {
        ino,
        kind,
        size,
        blocks,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        perm: (st.st_mode & 0o7777) as u16,
        nlink,
        uid: st.st_uid,
        gid: st.st_gid,
        blksize: st.st_blksize as u32,
        owned: false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn absurd_times_do_not_panic() {
        use super::time;
        // Extremes either fit or clamp; neither panics.
        assert!(time(i64::MIN, -5) <= std::time::UNIX_EPOCH);
        assert!(time(i64::MAX, 2_000_000_000) >= std::time::UNIX_EPOCH);
        assert!(time(-1, 0) < std::time::UNIX_EPOCH);
    }
}
