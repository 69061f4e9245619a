//! The overlay journal under a byte quota, driven directly (no mount):
//! online compaction keeps it bounded, EDQUOT refuses what does not fit and
//! records nothing, and whatever was accepted replays at the next open.

use std::path::Path;

use super::*;
use crate::grant::{FileMatch, FileType};
use crate::paths;
use journal::Seen;

const FILES: &[&str] = &[
    "README.md",
    "src/a.py",
    "src/b.py",
    "src/sub/c.py",
    "docs/x.md",
];

fn files() -> Vec<FileMatch> {
    FILES
        .iter()
        .map(|p| FileMatch {
            path: p.to_string(),
            file_type: FileType::Other,
            size_bytes: 0,
            symlink: false,
        })
        .collect()
}

fn base() -> Tree {
    Tree::from_files(&files())
}

/// Opens the overlay of `session` on a fresh tree; returns the view's tree.
fn open(session: &Path, max_bytes: u64) -> (Overlay, Tree) {
    let mut tree = base();
    let (ov, _) = Overlay::open(session, &mut tree, &base(), max_bytes, 1 << 20).unwrap();
    (ov, tree)
}

fn listing(t: &Tree) -> Vec<(String, Kind, Origin)> {
    let mut v: Vec<_> = t
        .subtree(ROOT)
        .into_iter()
        .skip(1)
        .map(|i| {
            let n = t.get(i).unwrap();
            (t.path(i).unwrap(), n.kind, n.origin.clone())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn journal_file_len(session: &Path) -> u64 {
    std::fs::metadata(session.join("overlay/journal.jsonl"))
        .unwrap()
        .len()
}

/// Appends `records` and, when accepted, applies them to the model.
fn step(ov: &Overlay, model: &mut Tree, records: &[Record]) -> io::Result<()> {
    ov.append(records)?;
    let mut seen = SeenMap::new();
    for r in records {
        journal::apply(model, &mut seen, r).unwrap();
    }
    Ok(())
}

/// The records of renaming `from` to the free path `to`, as the view
/// writes them: a del, then a put per node of the moved subtree.
fn rename_records(model: &Tree, from: &str, to: &str) -> Vec<Record> {
    let ino = model.lookup_path(from).unwrap();
    let mut records = vec![Record::Del { path: from.into() }];
    for i in model.subtree(ino) {
        if let Some(Record::Put {
            path,
            kind,
            obj,
            host,
        }) = journal::put_record(model, i)
        {
            records.push(Record::Put {
                path: format!("{to}{}", &path[from.len()..]),
                kind,
                obj,
                host,
            });
        }
    }
    records
}

fn seen(path: &str) -> Record {
    Record::Seen(Seen {
        path: path.into(),
        kind: Kind::File,
        size: 1,
        mtime_ns: 2,
        ino: 3,
        mode: 0o644,
        base: Some(format!("blake3:{}", "0".repeat(64))),
    })
}

/// The bound the module doc promises while nothing is refused: the
/// journal has grown by less than its compacted size (at least
/// COMPACT_MIN_GROWTH) since the last compaction, plus one append.
fn assert_bounded(ov: &Overlay, last_append: u64) {
    let (len, compacted) = ov.journal_len();
    assert!(
        len <= compacted + compacted.max(ov.min_growth) + last_append,
        "journal {len} bytes, compacted {compacted}"
    );
    assert_eq!(ov.quota.journal_bytes(), len, "the journal is accounted");
}

#[test]
fn renames_back_and_forth_stay_bounded_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (ov, mut model) = open(dir.path(), 1 << 20);
    let long = "n".repeat(200);
    let (a, b) = ("src/a.py".to_string(), format!("src/{long}"));
    // Directory renames too: their puts pin untouched host files.
    let (d1, d2) = ("src".to_string(), format!("moved-{long}"));
    let mut appended = 0u64;
    for i in 0..10_000 {
        let (from, to) = match i % 4 {
            0 => (a.as_str(), b.as_str()),
            1 => (b.as_str(), a.as_str()),
            2 => (d1.as_str(), d2.as_str()),
            _ => (d2.as_str(), d1.as_str()),
        };
        let recs = rename_records(&model, from, to);
        let n = serialize_io(&recs).unwrap().len() as u64;
        step(&ov, &mut model, &recs).unwrap();
        appended += n;
        assert_bounded(&ov, n);
    }
    assert!(appended > 4 << 20, "the loop appended {appended} bytes");
    let len = ov.journal_len().0;
    assert_eq!(journal_file_len(dir.path()), len);
    assert!(len < 128 << 10, "journal {len} bytes");
    // The mirror is the model; the journal replays to it.
    assert_eq!(listing(&ov.lock_journal().mirror), listing(&model));
    drop(ov);
    let (_, tree) = open(dir.path(), 1 << 20);
    assert_eq!(listing(&tree), listing(&model));
}

#[test]
fn a_full_quota_refuses_with_edquot_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let quota = 16 << 10;
    let (ov, mut model) = open(dir.path(), quota);
    let long = "c".repeat(250);
    let mut made = Vec::new();
    let mut refused = None;
    for i in 0..1000u64 {
        let path = format!("{long}{i}");
        let rec = Record::Put {
            path: path.clone(),
            kind: Kind::File,
            obj: Some(i + 1),
            host: None,
        };
        match step(&ov, &mut model, &[rec]) {
            Ok(()) => made.push(path),
            Err(e) => {
                refused = e.raw_os_error();
                break;
            }
        }
        assert!(ov.quota.bytes() <= quota);
    }
    assert_eq!(refused, Some(libc::EDQUOT));
    assert!(made.len() > 40, "only {} files fit", made.len());
    assert!(journal_file_len(dir.path()) <= quota);
    // Renames cannot make room either: refused whole, nothing recorded.
    let recs = rename_records(&model, &made[0], "elsewhere");
    assert_eq!(
        ov.append(&recs).unwrap_err().raw_os_error(),
        Some(libc::EDQUOT)
    );
    assert_eq!(listing(&ov.lock_journal().mirror), listing(&model));
    // Removals may use the grace, and free room for the next append.
    let del = Record::Del {
        path: made.pop().unwrap(),
    };
    step(&ov, &mut model, &[del]).unwrap();
    assert!(ov.quota.bytes() <= quota + REMOVAL_GRACE);
    drop(ov);
    let (ov, tree) = open(dir.path(), quota);
    assert_eq!(listing(&tree), listing(&model), "accepted records replay");
    // Reopened, the journal counts again, compacted.
    assert_eq!(ov.quota.journal_bytes(), journal_file_len(dir.path()));
}

#[test]
fn at_a_full_quota_a_compaction_makes_room_for_renames() {
    let dir = tempfile::tempdir().unwrap();
    let quota = 16 << 10;
    let (ov, mut model) = open(dir.path(), quota);
    // Data takes most of the quota; renames still work, compacting the
    // journal when the quota refuses it (never past the quota).
    ov.quota.add_object(1000, quota - 6 * 1024, true).unwrap();
    for i in 0..2000 {
        let (from, to) = if i % 2 == 0 {
            ("README.md", "README.txt")
        } else {
            ("README.txt", "README.md")
        };
        let recs = rename_records(&model, from, to);
        step(&ov, &mut model, &recs).unwrap();
        assert!(ov.quota.bytes() <= quota);
    }
    drop(ov);
    let (_, tree) = open(dir.path(), quota);
    assert_eq!(listing(&tree), listing(&model));
}

#[test]
fn seen_records_are_kept_through_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let (ov, mut model) = open(dir.path(), 64 << 20);
    step(
        &ov,
        &mut model,
        &[
            seen("src/b.py"),
            Record::Del {
                path: "src/b.py".into(),
            },
        ],
    )
    .unwrap();
    let long = "s".repeat(200);
    for i in 0..2000 {
        let (from, to) = if i % 2 == 0 {
            ("src/a.py".to_string(), format!("src/{long}"))
        } else {
            (format!("src/{long}"), "src/a.py".to_string())
        };
        let recs = rename_records(&model, &from, &to);
        step(&ov, &mut model, &recs).unwrap();
    }
    assert!(ov.journal_len().0 < 128 << 10);
    drop(ov);
    let mut tree = base();
    let (_, seen) = Overlay::open(dir.path(), &mut tree, &base(), 64 << 20, 100).unwrap();
    assert!(seen.contains_key("src/b.py"));
    assert_eq!(listing(&tree), listing(&model));
}

#[test]
fn a_compaction_killed_before_its_rename_leaves_the_old_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (ov, mut model) = open(dir.path(), 1 << 20);
    let recs = rename_records(&model, "src", "lib");
    step(&ov, &mut model, &recs).unwrap();
    drop(ov);
    // What a kill -9 in the middle of a rewrite leaves: a torn temp file.
    let tmp = dir.path().join("overlay").join(JOURNAL_TMP);
    std::fs::write(
        &tmp,
        b"{\"op\":\"del\",\"path\":\"README.md\"}\n{\"op\":\"pu",
    )
    .unwrap();
    let (_, tree) = open(dir.path(), 1 << 20);
    assert_eq!(listing(&tree), listing(&model));
    assert!(!tmp.exists(), "the temp file is removed at mount");
}

/// A random session of creates, mkdirs, removals and renames (of whole
/// subtrees), checked against a model tree after every compaction and at
/// reopen.
#[test]
fn random_sessions_compact_to_what_they_replay_to() {
    let dir = tempfile::tempdir().unwrap();
    let (ov, mut model) = open(dir.path(), 1 << 30);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut obj = 0;
    let mut compactions = 0;
    let mut last_compacted = ov.journal_len().1;
    for _ in 0..6000 {
        let live: Vec<crate::tree::Ino> = model.subtree(ROOT);
        if live.len() < 2 {
            break;
        }
        let dirs: Vec<crate::tree::Ino> = live
            .iter()
            .copied()
            .filter(|i| model.get(*i).is_some_and(|n| n.kind == Kind::Dir))
            .collect();
        let parent = dirs[next(dirs.len())];
        let name = format!("n{}", next(12));
        let new_path = paths::join(&model.path(parent).unwrap(), &name);
        let target = live[1 + next(live.len() - 1)];
        let target_path = model.path(target).unwrap();
        let free = model.child(parent, &name).is_none();
        let records = match next(5) {
            0 | 1 if free => {
                obj += 1;
                let kind = if next(3) == 0 { Kind::Dir } else { Kind::File };
                vec![Record::Put {
                    path: new_path,
                    kind,
                    obj: Some(obj),
                    host: None,
                }]
            }
            2 if model.get(target).is_some_and(|n| n.children.is_empty()) => {
                vec![seen(&target_path), Record::Del { path: target_path }]
            }
            3 | 4 if free && !model.is_ancestor(target, parent) => {
                rename_records(&model, &target_path, &new_path)
            }
            _ => continue,
        };
        step(&ov, &mut model, &records).unwrap();
        let compacted = ov.journal_len().1;
        if compacted != last_compacted {
            compactions += 1;
            last_compacted = compacted;
            assert_eq!(listing(&ov.lock_journal().mirror), listing(&model));
        }
    }
    assert!(compactions > 0, "no compaction happened");
    drop(ov);
    let (_, tree) = open(dir.path(), 1 << 30);
    assert_eq!(listing(&tree), listing(&model));
}

#[test]
fn xattrs_and_symlink_targets_count_against_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let quota = 3 * 1024;
    let (ov, _) = open(dir.path(), quota);
    let f = ov.new_obj();
    ov.quota.add_object(f, 0, true).unwrap();
    ov.create_file(f, 0o644).unwrap();
    let value = vec![b'v'; 1024];
    let mut set = 0;
    let refused = loop {
        match ov.setxattr(f, &format!("user.x{set}"), &value, 0) {
            Ok(()) => set += 1,
            Err(e) => break e.raw_os_error(),
        }
        assert!(ov.quota.bytes() <= quota);
    };
    assert_eq!((refused, set), (Some(libc::EDQUOT), 2));
    // Replacing a value counts the difference; removing frees it all.
    ov.setxattr(f, "user.x0", b"small", 0).unwrap();
    let after = ov.quota.bytes();
    assert_eq!(after, 2 * 7 + 1024 + 5);
    ov.removexattr(f, "user.x1").unwrap();
    assert_eq!(ov.quota.bytes(), after - 7 - 1024);
    // A symlink's target counts too, and a refused one leaves nothing.
    let l = ov.new_obj();
    ov.quota.add_object(l, 0, false).unwrap();
    let long = vec![b't'; 4000];
    assert_eq!(
        ov.symlink(l, &long).unwrap_err().raw_os_error(),
        Some(libc::EDQUOT)
    );
    assert!(ov.stat(l).is_err());
    ov.symlink(l, &long[..1000]).unwrap();
    let puts = [("f", Kind::File, f), ("l", Kind::Symlink, l)].map(|(p, kind, o)| Record::Put {
        path: p.into(),
        kind,
        obj: Some(o),
        host: None,
    });
    ov.append(&puts).unwrap();
    let used = ov.quota.bytes();
    assert_eq!(used, 12 + 1000 + ov.quota.journal_bytes());
    // What a mount finds is counted again.
    drop(ov);
    let (ov, _) = open(dir.path(), quota);
    assert_eq!(ov.quota.bytes(), used);
    ov.remove(l, Kind::Symlink).unwrap();
    assert_eq!(ov.quota.bytes(), used - 1000);
}

#[test]
fn orphan_objects_are_deleted_at_mount_and_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (ov, _) = open(dir.path(), 1 << 20);
    // Object 300 is journaled; 301 and 700 were made but never journaled
    // (a crash between the two).
    for o in [300, 301, 700] {
        ov.create_file(o, 0o644).unwrap();
    }
    let put = Record::Put {
        path: "kept".into(),
        kind: Kind::File,
        obj: Some(300),
        host: None,
    };
    ov.append(&[put]).unwrap();
    drop(ov);
    let (ov, tree) = open(dir.path(), 1 << 20);
    assert!(tree.lookup_path("kept").is_some());
    assert!(ov.stat(300).is_ok());
    assert!(
        ov.stat(301).is_err() && ov.stat(700).is_err(),
        "orphans left"
    );
    assert_eq!(ov.quota.objects(), 1);
    assert!(ov.new_obj() > 700, "numbers restart after the highest seen");
}

#[test]
fn a_removal_that_frees_more_than_it_adds_passes_even_far_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let quota = 16 << 10;
    let (ov, mut model) = open(dir.path(), quota);
    ov.quota.add_object(7, 0, true).unwrap();
    let put = Record::Put {
        path: "big".into(),
        kind: Kind::File,
        obj: Some(7),
        host: None,
    };
    step(&ov, &mut model, &[put]).unwrap();
    // A passthrough writer grew it far past the limit (settled at close).
    ov.quota.settle(7, 1 << 20);
    // Deleting a host file frees nothing: refused, even with the grace.
    let host_del = [
        seen("src/a.py"),
        Record::Del {
            path: "src/a.py".into(),
        },
    ];
    assert_eq!(
        ov.append(&host_del).unwrap_err().raw_os_error(),
        Some(libc::EDQUOT)
    );
    // Deleting the big file frees it: accepted.
    step(&ov, &mut model, &[Record::Del { path: "big".into() }]).unwrap();
    ov.quota.remove_object(7); // what the caller's removal of the object does
    assert!(ov.quota.bytes() <= quota);
    step(&ov, &mut model, &host_del).unwrap();
    drop(ov);
    let (_, tree) = open(dir.path(), quota);
    assert_eq!(listing(&tree), listing(&model));
}

/// What a compaction costs on a 200,000-file grant (the basis of
/// `COMPACT_GROWTH_PER_NODE`): `cargo test --release --lib bench_compaction
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_compaction_on_a_big_grant() {
    let mut paths: Vec<String> = (0..200_000)
        .map(|i| format!("d{}/e{}/f{i}.txt", i % 100, i % 37))
        .collect();
    paths.sort();
    let files: Vec<FileMatch> = paths
        .into_iter()
        .map(|path| FileMatch {
            path,
            file_type: FileType::Other,
            size_bytes: 0,
            symlink: false,
        })
        .collect();
    let base = Tree::from_files(&files);
    let mut t = Tree::from_files(&files);
    let dir = tempfile::tempdir().unwrap();
    let (ov, _) = Overlay::open(dir.path(), &mut t, &base, 1 << 40, 1 << 20).unwrap();
    let start = std::time::Instant::now();
    let j = ov.lock_journal();
    let recs = journal::compact(&ov.base, &j.mirror, &j.seen);
    eprintln!("compact: {:?} ({} records)", start.elapsed(), recs.len());
    let start = std::time::Instant::now();
    let c = copy_tree(&j.mirror);
    eprintln!("copy_tree: {:?} ({} nodes)", start.elapsed(), c.len());
    assert_eq!(ov.min_growth, 64 * c.len() as u64);
}

/// Each path with the number of names its file has.
fn names(t: &Tree) -> Vec<(String, u32)> {
    let mut v: Vec<_> = t
        .subtree(ROOT)
        .into_iter()
        .skip(1)
        .filter(|i| t.get(*i).is_some_and(|n| n.kind == Kind::File))
        .map(|i| (t.path(i).unwrap(), t.nlink(t.inode_of(i))))
        .collect();
    v.sort();
    v
}

/// Links made and dropped in a loop, and the directory holding the file's
/// first name renamed back and forth: online compactions and a reopen
/// keep one file under its names.
#[test]
fn hard_links_survive_online_compaction_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (ov, mut model) = open(dir.path(), 1 << 20);
    let put = |path: &str, kind, obj| Record::Put {
        path: path.into(),
        kind,
        obj: Some(obj),
        host: None,
    };
    step(&ov, &mut model, &[put("src/a.py", Kind::File, 1)]).unwrap();
    step(&ov, &mut model, &[put("links", Kind::Dir, 2)]).unwrap();
    let long = "l".repeat(200);
    let mut moved = false;
    for i in 0..4000 {
        let add = format!("links/{long}{}", i % 2);
        let gone = format!("links/{long}{}", (i + 1) % 2);
        step(&ov, &mut model, &[put(&add, Kind::File, 1)]).unwrap();
        if i > 0 {
            step(&ov, &mut model, &[Record::Del { path: gone }]).unwrap();
        }
        if i % 10 == 0 {
            let (from, to) = if moved {
                ("moved", "src")
            } else {
                ("src", "moved")
            };
            let recs = rename_records(&model, from, to);
            step(&ov, &mut model, &recs).unwrap();
            moved = !moved;
        }
    }
    let first = if moved { "moved/a.py" } else { "src/a.py" };
    let want = vec![(first.to_string(), 2), (format!("links/{long}1"), 2)];
    let got: Vec<_> = names(&model)
        .into_iter()
        .filter(|(p, _)| p.ends_with("a.py") || p.starts_with("links/"))
        .collect();
    let mut want = want;
    want.sort();
    assert_eq!(got, want);
    let (len, compacted) = ov.journal_len();
    assert!(compacted > 0 && len < 64 << 10, "journal {len} bytes");
    assert_eq!(names(&ov.lock_journal().mirror), names(&model));
    drop(ov);
    let (ov, tree) = open(dir.path(), 1 << 20);
    assert_eq!(names(&tree), names(&model));
    assert_eq!(listing(&tree), listing(&model));
    assert_eq!(
        ov.quota.objects(),
        2,
        "one object for the file, one for links/"
    );
}

/// A torn last journal line (a crash in the middle of an append) is
/// ignored at the next open, and later appends never follow it; damage
/// anywhere else, or a record that does not fit the grant (even the last
/// one), stops the open with an error naming the line, and leaves the
/// journal as it was.
#[test]
fn a_torn_last_line_is_ignored_and_other_damage_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("overlay/journal.jsonl");
    let (ov, mut model) = open(dir.path(), 1 << 20);
    step(
        &ov,
        &mut model,
        &[Record::Del {
            path: "README.md".into(),
        }],
    )
    .unwrap();
    step(
        &ov,
        &mut model,
        &[Record::Del {
            path: "src/a.py".into(),
        }],
    )
    .unwrap();
    drop(ov);
    let good = std::fs::read(&journal).unwrap();
    assert_eq!(good.iter().filter(|&&b| b == b'\n').count(), 2);

    let mut torn = good.clone();
    torn.extend_from_slice(b"{\"op\":\"del\",\"path\":\"docs/x");
    std::fs::write(&journal, &torn).unwrap();
    let (ov, tree) = open(dir.path(), 1 << 20);
    assert_eq!(listing(&tree), listing(&model));
    // An append after the torn line replays too.
    step(
        &ov,
        &mut model,
        &[Record::Del {
            path: "src/b.py".into(),
        }],
    )
    .unwrap();
    drop(ov);
    let (_, tree) = open(dir.path(), 1 << 20);
    assert_eq!(listing(&tree), listing(&model));

    let lines: Vec<&[u8]> = good.split_inclusive(|&b| b == b'\n').collect();
    let damaged = |middle: &[u8], last: &[u8]| {
        let mut j = lines[0].to_vec();
        j.extend_from_slice(middle);
        j.extend_from_slice(lines[1]);
        j.extend_from_slice(last);
        j
    };
    let misfit = b"{\"op\":\"put\",\"path\":\"nope/x\",\"kind\":\"file\",\"obj\":9}\n";
    for (bytes, want) in [
        (
            damaged(b"{\"op\":\"del\",\"pa\n", b""),
            "is damaged at line 2",
        ),
        (damaged(b"not json\n", b""), "is damaged at line 2"),
        (damaged(misfit, b""), "does not fit the grant at line 2"),
        (damaged(b"", misfit), "does not fit the grant at line 3"),
    ] {
        std::fs::write(&journal, &bytes).unwrap();
        let mut tree = base();
        let e = Overlay::open(dir.path(), &mut tree, &base(), 1 << 20, 1 << 20)
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want) && e.contains("journal.jsonl"),
            "{want}: {e}"
        );
        assert_eq!(
            std::fs::read(&journal).unwrap(),
            bytes,
            "{want}: journal changed"
        );
    }
}
