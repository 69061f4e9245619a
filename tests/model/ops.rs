//! The operations a case runs, and how proptest generates them: paths over
//! a small alphabet (so names collide and errors are frequent), a few
//! modes, short data, symlink targets that may resolve, dangle or loop.

use proptest::prelude::*;

/// Hard links are being added to the core by another change (today
/// `View::link` answers EPERM). The model and the generator have them;
/// they are generated only when this is on. To turn it on: set it to
/// `true` and, in `view.rs`, call `link(ino, newparent, newname)`.
pub const HARD_LINKS: bool = false;

/// The first component of a path: the host tree's names, one the view
/// hides (`.env`, a built-in deny), `h` (a host directory holding only a
/// hidden file, so invisible) and `ro` (outside the write prefix, when
/// the case has one).
const TOP: &[&str] = &["a", "b", "d", "h", "ro", ".env"];
/// Deeper components.
const DEEP: &[&str] = &["a", "b", "e", ".env"];

/// Symlink targets, relative to the link's directory: some resolve
/// (depending on where the link is and what exists), `nowhere` never does,
/// `b` may make a loop (the host's `b` points to `a`).
pub const TARGETS: &[&str] = &["a", "d/a", "e", "b", "nowhere"];

pub const XATTR_NAMES: &[&str] = &["user.x", "user.y", "trusted.t"];

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

/// One step of a case, named by paths as a program would call it.
#[derive(Clone, Debug)]
pub enum Op {
    /// `open(path, O_CREAT | O_EXCL | O_WRONLY, mode)`, then close.
    Create {
        path: String,
        mode: u32,
    },
    /// `open(path, O_WRONLY | O_NOFOLLOW)`, `pwrite`, close.
    Write {
        path: String,
        offset: u64,
        data: Vec<u8>,
    },
    /// `truncate(path, size)` (follows a symlink).
    Truncate {
        path: String,
        size: u64,
    },
    /// `renameat2(from, to, flags)`.
    Rename {
        from: String,
        to: String,
        mode: RenameMode,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// `linkat(from, to, 0)`: the old path's last symlink is not followed.
    Link {
        from: String,
        to: String,
    },
    /// `chmod(path, mode)` (follows a symlink).
    Chmod {
        path: String,
        mode: u32,
    },
    /// `setxattr(path, name, value, flags)` (follows a symlink).
    SetXattr {
        path: String,
        name: String,
        value: Vec<u8>,
        mode: XattrMode,
    },
    /// Drop the view and open it again from its state dir: the journal is
    /// replayed, and compacted.
    Reopen,
}

fn component(level: usize) -> impl Strategy<Value = &'static str> {
    let names = if level == 0 { TOP } else { DEEP };
    // The hidden name a little less often than the others.
    let weighted: Vec<(u32, Just<&'static str>)> = names
        .iter()
        .map(|n| (if *n == ".env" { 1 } else { 4 }, Just(*n)))
        .collect();
    proptest::strategy::Union::new_weighted(weighted)
}

pub fn path() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just(1usize), 5 => Just(2usize), 2 => Just(3usize)].prop_flat_map(|depth| {
        (0..depth)
            .map(component)
            .collect::<Vec<_>>()
            .prop_map(|parts| parts.join("/"))
    })
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

pub fn op() -> impl Strategy<Value = Op> {
    let rename_mode = prop::sample::select(vec![
        RenameMode::Plain,
        RenameMode::Plain,
        RenameMode::NoReplace,
        RenameMode::Exchange,
    ]);
    let xattr_mode =
        prop::sample::select(vec![XattrMode::Any, XattrMode::Create, XattrMode::Replace]);
    let mut ops: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (
            4,
            (path(), file_mode())
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
            (path(), path(), rename_mode)
                .prop_map(|(from, to, mode)| Op::Rename { from, to, mode })
                .boxed(),
        ),
        (3, path().prop_map(|path| Op::Unlink { path }).boxed()),
        (
            3,
            (path(), dir_mode())
                .prop_map(|(path, mode)| Op::Mkdir { path, mode })
                .boxed(),
        ),
        (2, path().prop_map(|path| Op::Rmdir { path }).boxed()),
        (
            2,
            (path(), prop::sample::select(TARGETS))
                .prop_map(|(path, t)| Op::Symlink {
                    path,
                    target: t.to_string(),
                })
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
                    name: name.to_string(),
                    value,
                    mode,
                })
                .boxed(),
        ),
        (1, Just(Op::Reopen).boxed()),
    ];
    if HARD_LINKS {
        let link = (path(), path()).prop_map(|(from, to)| Op::Link { from, to });
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
    pub ops: Vec<Op>,
}

pub fn case(max_ops: usize) -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(Prefixes::None), Just(Prefixes::D)],
        prop::collection::vec(op(), 1..=max_ops),
    )
        .prop_map(|(prefixes, ops)| Case { prefixes, ops })
}
