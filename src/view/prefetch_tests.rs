//! The prefetcher (`prefetch.rs`) driven through listings, without a mount:
//! what it stats is exactly the view's in-place names, never a hidden or
//! overlay name, never through a symlink, and never more than its budget.

use std::fs;

use super::tests::no_backing;
use super::write_tests::{fixture_with, ino, name, open_view, ROOTUSER};
use super::*;

/// Lists `dir` from its start, one batch (what the first request does).
fn first_batch(v: &View, dir: Ino) {
    let fh = v.opendir(dir).unwrap().fh;
    v.readdir(dir, fh, 0).unwrap();
    v.releasedir(fh);
}

fn statted(v: &View) -> Vec<String> {
    let p = v.prefetch.as_ref().expect("a prefetcher");
    p.idle();
    let mut s = p.statted();
    s.sort();
    s
}

#[test]
fn a_listing_warms_its_subdirectories_in_place_names_only() {
    let fx = fixture_with(&[], &[("d/.env", "SECRET=1"), ("d/f.txt", "f\n")]);
    let v = open_view(&fx, ViewOptions::default());
    // d/b.txt copied up, d/new.txt made in the view: both overlay objects.
    let o = v
        .open(ino(&v, "d/b.txt"), libc::O_WRONLY, no_backing)
        .unwrap();
    v.write(o.fh, 0, b"B", false).unwrap();
    v.release(o.fh);
    let (_, o) = v
        .create(ino(&v, "d"), name("new.txt"), 0o644, ROOTUSER, no_backing)
        .unwrap();
    v.release(o.fh);

    first_batch(&v, ROOT);
    assert_eq!(statted(&v), ["d/e", "d/f.txt"]);
    first_batch(&v, ino(&v, "d"));
    assert_eq!(statted(&v), ["d/e", "d/e/c.txt", "d/f.txt"]);
    // Leaves have nothing below: nothing more.
    first_batch(&v, ino(&v, "d/e"));
    assert_eq!(statted(&v), ["d/e", "d/e/c.txt", "d/f.txt"]);
}

#[test]
fn a_directory_swapped_for_a_symlink_is_never_followed() {
    let fx = fixture_with(&[], &[]);
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("c.txt"), "outside\n").unwrap();
    let v = open_view(&fx, ViewOptions::default());
    // After the grant: d/e is now a symlink to a directory outside.
    fs::remove_dir_all(fx.host.join("d/e")).unwrap();
    std::os::unix::fs::symlink(outside.path(), fx.host.join("d/e")).unwrap();
    first_batch(&v, ino(&v, "d"));
    assert_eq!(statted(&v), Vec::<String>::new());
}

#[test]
fn one_listing_queues_at_most_its_budget() {
    let many: Vec<(String, &str)> = (0..prefetch::BUDGET + 500)
        .map(|i| (format!("big/f{i:05}"), "x"))
        .collect();
    let extra: Vec<(&str, &str)> = many.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    let fx = fixture_with(&[], &extra);
    let v = open_view(&fx, ViewOptions::default());
    let big = ino(&v, "big");
    let fh = v.opendir(big).unwrap().fh;
    // As a FUSE reply buffer does: the entry that does not fit is refused.
    let mut taken = 0;
    v.readdir_each(big, fh, 0, |_, _| {
        if taken == 100 {
            return true;
        }
        taken += 1;
        false
    })
    .unwrap();
    v.releasedir(fh);
    let s = statted(&v);
    assert_eq!(s.len(), prefetch::BUDGET);
    // The rest of the listing, from the first name left out ("." and ".."
    // came first).
    assert_eq!(s[0], "big/f00098");
    assert_eq!(
        s[prefetch::BUDGET - 1],
        format!("big/f{:05}", 98 + prefetch::BUDGET - 1)
    );
}

fn read_ahead(v: &View) -> Vec<String> {
    let p = v.prefetch.as_ref().expect("a prefetcher");
    p.idle();
    p.read()
}

/// Opens `path` to read, and closes it.
fn open_read(v: &View, path: &str) {
    let o = v.open(ino(v, path), libc::O_RDONLY, no_backing).unwrap();
    v.release(o.fh);
}

/// r/f00 … r/f39, r/sub/ between f19 and f20 (by name), r/.env hidden.
fn reader_fixture() -> super::write_tests::Fx {
    let mut files: Vec<(String, &str)> = (0..40).map(|i| (format!("r/f{i:02}"), "x\n")).collect();
    files.push(("r/f19a/x".into(), "x\n"));
    files.push(("r/.env".into(), "SECRET=1"));
    let extra: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    fixture_with(&[], &extra)
}

#[test]
fn reading_a_directory_in_order_reads_the_next_files_ahead() {
    let fx = reader_fixture();
    let v = open_view(&fx, ViewOptions::default());
    // One open is no order yet.
    open_read(&v, "r/f00");
    assert_eq!(read_ahead(&v), Vec::<String>::new());
    open_read(&v, "r/f01");
    let want: Vec<String> = (2..2 + prefetch::READ_AHEAD)
        .map(|i| format!("r/f{i:02}"))
        .collect();
    assert_eq!(read_ahead(&v), want);
    // Within what is read ahead already: nothing more until it runs low.
    open_read(&v, "r/f02");
    assert_eq!(read_ahead(&v).len(), prefetch::READ_AHEAD);
    // Further on (past the directory r/f19a, which is skipped) it refills
    // from where it stopped.
    for i in 3..=12 {
        open_read(&v, &format!("r/f{i:02}"));
    }
    let got = read_ahead(&v);
    assert!(got.len() > prefetch::READ_AHEAD, "{got:?}");
    assert_eq!(got[prefetch::READ_AHEAD], "r/f18");
    assert!(
        got.iter().all(|p| p != "r/f19a" && p != "r/.env"),
        "{got:?}"
    );
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique, got, "each file once");
}

#[test]
fn opens_out_of_order_read_nothing_ahead() {
    let fx = reader_fixture();
    let v = open_view(&fx, ViewOptions::default());
    for i in [30, 5, 20, 1, 39, 10] {
        open_read(&v, &format!("r/f{i:02}"));
    }
    assert_eq!(read_ahead(&v), Vec::<String>::new());
}

/// Only host files the view shows, never through a symlink and never a
/// FIFO (which must not block the worker); copied-up files are the
/// overlay's.
#[test]
fn read_ahead_opens_only_shown_regular_host_files() {
    let fx = reader_fixture();
    let v = open_view(&fx, ViewOptions::default());
    // f03 copied up; f04 swapped for a symlink, f05 for a FIFO on the host.
    let o = v
        .open(ino(&v, "r/f03"), libc::O_WRONLY, no_backing)
        .unwrap();
    v.release(o.fh);
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("t"), "outside\n").unwrap();
    fs::remove_file(fx.host.join("r/f04")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("t"), fx.host.join("r/f04")).unwrap();
    fs::remove_file(fx.host.join("r/f05")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fx.host.join("r/f05"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    open_read(&v, "r/f00");
    open_read(&v, "r/f01");
    let got = read_ahead(&v);
    assert_eq!(got[0], "r/f02");
    assert_eq!(got[1], "r/f06", "{got:?}");
}
