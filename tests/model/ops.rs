//! The operations a case runs, and how proptest generates them. A path is
//! either spelled out over a small alphabet (so names collide, and walks
//! meet files, symlinks and hidden names), or picks an entry, or a name
//! in a directory, that exists when the step runs (so that most steps do
//! something). Modes, data and symlink targets come from short lists.

use proptest::prelude::*;

use crate::reference::{join, Model};

/// Whether hard links are generated (the core has them; off only to
/// narrow a failure down).
pub const HARD_LINKS: bool = true;

/// The first component of a spelled-out path: the host tree's names, one
/// the view hides (`.env`, a built-in deny), `h` (a host directory
/// holding only a hidden file, so invisible) and `ro` (outside the write
/// prefix, when the case has one); with weights.
const TOP: &[(u32, &str)] = &[
    (2, "a"),
    (1, "b"),
    (6, "d"),
    (2, "h"),
    (2, "ro"),
    (1, ".env"),
];
/// Deeper components.
const DEEP: &[(u32, &str)] = &[(3, "a"), (3, "b"), (3, "e"), (1, ".env")];
/// Names in a directory that exists: `c` and `f` are in no host directory.
const NAMES: &[(u32, &str)] = &[
    (3, "a"),
    (2, "b"),
    (2, "e"),
    (3, "c"),
    (3, "f"),
    (1, ".env"),
];

/// Symlink targets, relative to the link's directory: some resolve
/// (depending on where the link is and what exists), `nowhere` never does,
/// `b` may make a loop (the host's `b` points to `a`).
const TARGETS: &[&str] = &["a", "d/a", "e", "b", "nowhere"];

const XATTR_NAMES: &[&str] = &["user.x", "user.y", "trusted.t"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    Plain,
    NoReplace,
    Exchange,
}

impl RenameMode {
    /// The `renameat2(2)` flags.
    pub fn flags(self) -> u32 {
        match self {
            RenameMode::Plain => 0,
            RenameMode::NoReplace => libc::RENAME_NOREPLACE,
            RenameMode::Exchange => libc::RENAME_EXCHANGE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrMode {
    Any,
    Create,
    Replace,
}

impl XattrMode {
    /// The `setxattr(2)` flags.
    pub fn flags(self) -> i32 {
        match self {
            XattrMode::Any => 0,
            XattrMode::Create => libc::XATTR_CREATE,
            XattrMode::Replace => libc::XATTR_REPLACE,
        }
    }
}

/// Every name a generated path may have.
pub fn names_used() -> std::collections::BTreeSet<&'static str> {
    TOP.iter()
        .chain(DEEP)
        .chain(NAMES)
        .map(|(_, n)| *n)
        .collect()
}

/// A generated path, made concrete against the model when its step runs.
#[derive(Clone, Debug)]
pub enum PathGen {
    Spelled(String),
    /// The n-th (modulo) entry that exists.
    Existing(usize),
    /// The n-th (modulo) directory that exists, the root left out.
    Dir(usize),
    /// A name in the n-th (modulo) directory that exists, the root included.
    In(usize, &'static str),
}

impl PathGen {
    fn resolve(&self, m: &Model) -> String {
        match self {
            PathGen::Spelled(p) => p.clone(),
            PathGen::Existing(n) => {
                let all = m.paths();
                all.get(n % all.len().max(1)).cloned().unwrap_or_default()
            }
            PathGen::Dir(n) => {
                let dirs = m.dirs();
                let below_root = &dirs[1.min(dirs.len())..];
                let pick = below_root.get(n % below_root.len().max(1));
                pick.cloned().unwrap_or_default()
            }
            PathGen::In(n, name) => {
                let dirs = m.dirs();
                let dir = dirs.get(n % dirs.len().max(1)).cloned().unwrap_or_default();
                join(&dir, name)
            }
        }
    }
}

/// One step of a case, named by paths (`P`) as a program would call it.
#[derive(Clone, Debug)]
pub enum Op<P = String> {
    /// `open(path, O_CREAT | O_EXCL | O_WRONLY, mode)`, then close.
    Create {
        path: P,
        mode: u32,
    },
    /// `open(path, O_WRONLY | O_NOFOLLOW)`, `pwrite`, close.
    Write {
        path: P,
        offset: u64,
        data: Vec<u8>,
    },
    /// `truncate(path, size)` (follows a symlink).
    Truncate {
        path: P,
        size: u64,
    },
    /// `renameat2(from, to, flags)`.
    Rename {
        from: P,
        to: P,
        mode: RenameMode,
    },
    Unlink {
        path: P,
    },
    Mkdir {
        path: P,
        mode: u32,
    },
    Rmdir {
        path: P,
    },
    Symlink {
        path: P,
        target: &'static str,
    },
    /// `linkat(from, to, 0)`: the old path's last symlink is not followed.
    Link {
        from: P,
        to: P,
    },
    /// `chmod(path, mode)` (follows a symlink).
    Chmod {
        path: P,
        mode: u32,
    },
    /// `setxattr(path, name, value, flags)` (follows a symlink).
    SetXattr {
        path: P,
        name: &'static str,
        value: Vec<u8>,
        mode: XattrMode,
    },
    /// Drop the view and open it again from its state dir: the journal is
    /// replayed, and compacted.
    Reopen,
}

impl Op<PathGen> {
    /// The step with its paths made concrete against the model as it is.
    pub fn resolve(&self, m: &Model) -> Op {
        let r = |p: &PathGen| p.resolve(m);
        match self {
            Op::Create { path, mode } => Op::Create {
                path: r(path),
                mode: *mode,
            },
            Op::Write { path, offset, data } => Op::Write {
                path: r(path),
                offset: *offset,
                data: data.clone(),
            },
            Op::Truncate { path, size } => Op::Truncate {
                path: r(path),
                size: *size,
            },
            Op::Rename { from, to, mode } => Op::Rename {
                from: r(from),
                to: r(to),
                mode: *mode,
            },
            Op::Unlink { path } => Op::Unlink { path: r(path) },
            Op::Mkdir { path, mode } => Op::Mkdir {
                path: r(path),
                mode: *mode,
            },
            Op::Rmdir { path } => Op::Rmdir { path: r(path) },
            Op::Symlink { path, target } => Op::Symlink {
                path: r(path),
                target,
            },
            Op::Link { from, to } => Op::Link {
                from: r(from),
                to: r(to),
            },
            Op::Chmod { path, mode } => Op::Chmod {
                path: r(path),
                mode: *mode,
            },
            Op::SetXattr {
                path,
                name,
                value,
                mode,
            } => Op::SetXattr {
                path: r(path),
                name,
                value: value.clone(),
                mode: *mode,
            },
            Op::Reopen => Op::Reopen,
        }
    }
}

fn weighted(names: &'static [(u32, &'static str)]) -> impl Strategy<Value = &'static str> {
    let options: Vec<(u32, Just<&'static str>)> =
        names.iter().map(|(w, n)| (*w, Just(*n))).collect();
    proptest::strategy::Union::new_weighted(options)
}

fn spelled() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just(1usize), 4 => Just(2usize), 2 => Just(3usize)].prop_flat_map(|depth| {
        (0..depth)
            .map(|level| weighted(if level == 0 { TOP } else { DEEP }))
            .collect::<Vec<_>>()
            .prop_map(|parts| parts.join("/"))
    })
}

/// An entry to change: mostly one that exists.
fn path() -> impl Strategy<Value = PathGen> {
    prop_oneof![
        2 => spelled().prop_map(PathGen::Spelled),
        5 => any::<usize>().prop_map(PathGen::Existing),
        1 => any::<usize>().prop_map(PathGen::Dir),
        1 => new_name(),
    ]
}

/// Where a rename goes: an entry that exists, or a new name.
fn target_path() -> impl Strategy<Value = PathGen> {
    prop_oneof![2 => spelled().prop_map(PathGen::Spelled), 3 => path(), 4 => new_name()]
}

/// A name in an existing directory.
fn new_name() -> impl Strategy<Value = PathGen> {
    (any::<usize>(), weighted(NAMES)).prop_map(|(n, name)| PathGen::In(n, name))
}

/// Where a new entry goes: mostly a name in an existing directory.
fn new_path() -> impl Strategy<Value = PathGen> {
    prop_oneof![2 => spelled().prop_map(PathGen::Spelled), 5 => new_name()]
}

/// What rmdir removes: mostly a directory.
fn dir_path() -> impl Strategy<Value = PathGen> {
    prop_oneof![3 => any::<usize>().prop_map(PathGen::Dir), 1 => path()]
}

fn file_mode() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![0o644, 0o600, 0o755, 0o000, 0o4755, 0o2755, 0o1644])
}

fn dir_mode() -> impl Strategy<Value = u32> {
    // mkdir(2) drops set-id bits; 0o2755 shows that (and set-group-id
    // directories pass the bit on when chmod gives it).
    prop::sample::select(vec![0o755, 0o700, 0o1777, 0o2755])
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"xyz\n".to_vec()), 0..6)
}

fn op() -> impl Strategy<Value = Op<PathGen>> {
    let rename_mode = prop::sample::select(vec![
        RenameMode::Plain,
        RenameMode::Plain,
        RenameMode::NoReplace,
        RenameMode::Exchange,
    ]);
    let xattr_mode =
        prop::sample::select(vec![XattrMode::Any, XattrMode::Create, XattrMode::Replace]);
    let mut ops: Vec<(u32, BoxedStrategy<Op<PathGen>>)> = vec![
        (
            4,
            (new_path(), file_mode())
                .prop_map(|(path, mode)| Op::Create { path, mode })
                .boxed(),
        ),
        (
            4,
            (path(), 0u64..8, data())
                .prop_map(|(path, offset, data)| Op::Write { path, offset, data })
                .boxed(),
        ),
        (
            2,
            (path(), 0u64..10)
                .prop_map(|(path, size)| Op::Truncate { path, size })
                .boxed(),
        ),
        (
            6,
            (path(), target_path(), rename_mode)
                .prop_map(|(from, to, mode)| Op::Rename { from, to, mode })
                .boxed(),
        ),
        (3, path().prop_map(|path| Op::Unlink { path }).boxed()),
        (
            3,
            (new_path(), dir_mode())
                .prop_map(|(path, mode)| Op::Mkdir { path, mode })
                .boxed(),
        ),
        (2, dir_path().prop_map(|path| Op::Rmdir { path }).boxed()),
        (
            2,
            (new_path(), prop::sample::select(TARGETS))
                .prop_map(|(path, target)| Op::Symlink { path, target })
                .boxed(),
        ),
        (
            2,
            (path(), prop_oneof![file_mode(), dir_mode()])
                .prop_map(|(path, mode)| Op::Chmod { path, mode })
                .boxed(),
        ),
        (
            2,
            (
                path(),
                prop::sample::select(XATTR_NAMES),
                data(),
                xattr_mode,
            )
                .prop_map(|(path, name, value, mode)| Op::SetXattr {
                    path,
                    name,
                    value,
                    mode,
                })
                .boxed(),
        ),
        (1, Just(Op::Reopen).boxed()),
    ];
    if HARD_LINKS {
        let link = (path(), new_path()).prop_map(|(from, to)| Op::Link { from, to });
        ops.push((3, link.boxed()));
    }
    proptest::strategy::Union::new_weighted(ops)
}

/// The write prefixes of a case's grant: none (every visible entry may
/// change; new names anywhere the deny patterns allow) or `d` (all else
/// read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefixes {
    None,
    D,
}

impl Prefixes {
    pub fn list(self) -> Vec<String> {
        match self {
            Prefixes::None => vec![],
            Prefixes::D => vec!["d".to_string()],
        }
    }
}

#[derive(Clone, Debug)]
pub struct Case {
    pub prefixes: Prefixes,
    pub ops: Vec<Op<PathGen>>,
}

pub fn case(max_ops: usize) -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(Prefixes::None), Just(Prefixes::D)],
        prop::collection::vec(op(), 1..=max_ops),
    )
        .prop_map(|(prefixes, ops)| Case { prefixes, ops })
}
