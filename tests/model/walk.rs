//! The kernel's part of every call: the path walk. A FUSE filesystem
//! never sees a path, only lookups, one name at a time, and readlinks when
//! the kernel follows a symlink; the kernel answers ENOTDIR and ELOOP
//! itself. Both the reference model and the core's driver resolve paths
//! here, through their own `lookup` and `readlink`; the differential test
//! checks this walk against the real kernel's.

use std::collections::VecDeque;

/// How many symlinks one walk follows before it answers ELOOP (Linux's
/// `MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What a path walk needs of a namespace.
pub trait Namespace {
    type Id: Clone;
    fn root(&self) -> Self::Id;
    /// The entry `name` of directory `dir`, or the errno.
    fn lookup(&self, dir: &Self::Id, name: &str) -> Result<(Self::Id, Kind), i32>;
    fn readlink(&self, id: &Self::Id) -> Result<Vec<u8>, i32>;
}

/// Resolves `path` (relative, `/`-separated, from the root): every symlink
/// before the last component is followed, the last one only if `follow`.
/// Targets are relative to the link's directory (the generator makes no
/// absolute targets and no `..`).
pub fn resolve<N: Namespace>(ns: &N, path: &str, follow: bool) -> Result<(N::Id, Kind), i32> {
    let mut queue: VecDeque<String> = components(path);
    let mut dir = ns.root();
    if queue.is_empty() {
        return Ok((dir, Kind::Dir)); // the root itself
    }
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        let (id, kind) = ns.lookup(&dir, &name)?;
        let last = queue.is_empty();
        match kind {
            Kind::Symlink if !last || follow => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(libc::ELOOP);
                }
                let target = ns.readlink(&id)?;
                let target = String::from_utf8(target).map_err(|_| libc::ENOENT)?;
                for c in components(&target).into_iter().rev() {
                    queue.push_front(c);
                }
            }
            Kind::Dir if last => return Ok((id, kind)),
            Kind::Dir => dir = id,
            _ if last => return Ok((id, kind)),
            _ => return Err(libc::ENOTDIR),
        }
    }
    // Only an empty symlink target gets here.
    Err(libc::ENOENT)
}

/// The directory that holds `path`'s last component (resolved, symlinks
/// followed), and that name.
pub fn resolve_parent<N: Namespace>(ns: &N, path: &str) -> Result<(N::Id, String), i32> {
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, path),
    };
    let dir = match parent {
        None => ns.root(),
        Some(p) => match resolve(ns, p, true)? {
            (id, Kind::Dir) => id,
            _ => return Err(libc::ENOTDIR),
        },
    };
    Ok((dir, name.to_string()))
}

fn components(path: &str) -> VecDeque<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}
