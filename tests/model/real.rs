//! The same operations on a plain directory of the real filesystem, with
//! the system calls a program would make, and the directory read back as
//! a `Picture`: what Linux answers, to hold the model and the core to.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags, XattrFlags, CWD};

use crate::ops::Op;
use crate::picture::{self, Picture};
use crate::reference::join;
use crate::walk::Kind;

pub struct Real {
    root: PathBuf,
}

fn errno<T>(r: rustix::io::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.raw_os_error())
}

impl Real {
    pub fn new(root: PathBuf) -> Real {
        Real { root }
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    pub fn apply(&self, op: &Op) -> Result<(), i32> {
        match op {
            Op::Create { path, mode } => {
                let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC;
                errno(rfs::open(self.at(path), flags, Mode::from_raw_mode(*mode))).map(drop)
            }
            Op::Write { path, offset, data } => {
                let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = errno(rfs::open(self.at(path), flags, Mode::empty()))?;
                errno(rustix::io::pwrite(&fd, data, *offset)).map(drop)
            }
            Op::Truncate { path, size } => {
                let c = CString::new(self.at(path).as_os_str().as_bytes()).expect("no NUL");
                // SAFETY: a valid C string; truncate(2) reads nothing else.
                match unsafe { libc::truncate(c.as_ptr(), *size as libc::off_t) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
                }
            }
            Op::Chmod { path, mode } => errno(rfs::chmodat(
                CWD,
                self.at(path),
                Mode::from_raw_mode(*mode),
                AtFlags::empty(),
            )),
            Op::SetXattr {
                path,
                name,
                value,
                mode,
            } => errno(rfs::setxattr(
                self.at(path),
                *name,
                value,
                XattrFlags::from_bits_retain(mode.flags() as _),
            )),
            Op::Unlink { path } => errno(rfs::unlinkat(CWD, self.at(path), AtFlags::empty())),
            Op::Rmdir { path } => errno(rfs::unlinkat(CWD, self.at(path), AtFlags::REMOVEDIR)),
            Op::Mkdir { path, mode } => {
                errno(rfs::mkdirat(CWD, self.at(path), Mode::from_raw_mode(*mode)))
            }
            Op::Symlink { path, target } => errno(rfs::symlinkat(*target, CWD, self.at(path))),
            Op::Link { from, to } => errno(rfs::linkat(
                CWD,
                self.at(from),
                CWD,
                self.at(to),
                AtFlags::empty(),
            )),
            Op::Rename { from, to, mode } => errno(rfs::renameat_with(
                CWD,
                self.at(from),
                CWD,
                self.at(to),
                RenameFlags::from_bits_retain(mode.flags()),
            )),
            Op::Reopen => Ok(()),
        }
    }

    pub fn picture(&self) -> Picture {
        let mut pic = Picture::default();
        let mut inos = Vec::new();
        read_dir(&self.root, "", &mut pic, &mut inos);
        pic.set_links(inos);
        pic
    }
}

fn read_dir(dir: &Path, path: &str, pic: &mut Picture, inos: &mut Vec<(u64, String)>) {
    for e in fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("dir entry");
        let p = join(path, &e.file_name().to_string_lossy());
        let full = e.path();
        let md = fs::symlink_metadata(&full).expect("lstat");
        let ft = md.file_type();
        let (kind, content) = if ft.is_dir() {
            (Kind::Dir, vec![])
        } else if ft.is_symlink() {
            let t = fs::read_link(&full).expect("readlink");
            (Kind::Symlink, t.as_os_str().as_bytes().to_vec())
        } else {
            (Kind::File, fs::read(&full).expect("read"))
        };
        pic.entries.insert(
            p.clone(),
            picture::Entry {
                kind,
                perm: md.permissions().mode() & 0o7777,
                size: (kind != Kind::Dir).then_some(md.len()),
                nlink: md.nlink() as u32,
                content,
                xattrs: user_xattrs(&full),
            },
        );
        if kind == Kind::Dir {
            read_dir(&full, &p, pic, inos);
        } else {
            inos.push((md.ino(), p));
        }
    }
}

fn user_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 64 * 1024];
    let n = rfs::llistxattr(path, &mut names[..]).expect("listxattr");
    let mut out = BTreeMap::new();
    for name in names[..n]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 64 * 1024];
        let len = rfs::lgetxattr(path, name.as_str(), &mut value[..]).expect("getxattr");
        value.truncate(len);
        out.insert(name, value);
    }
    out
}
