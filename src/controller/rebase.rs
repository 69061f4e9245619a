//! After a commit the host holds what the overlay held: the session is
//! rebased so the committed paths are no longer pending. The grant's file
//! list becomes the host's new truth (created paths added, deleted ones
//! removed), committed nodes read from the host again, their objects are
//! dropped and the journal is rewritten against the new file list. After a
//! whole commit the overlay is released.

use std::collections::BTreeSet;

use crate::error::{IoContext, Result};
use crate::grant::{FileMatch, FileType, Grant};
use crate::overlay::journal::{compact, Record};
use crate::patch::Op;
use crate::state::StateDir;
use crate::view::tree::{Kind, Origin, Tree};

pub fn after_commit(
    state: &StateDir,
    grant: &Grant,
    applied: &[(String, Op)],
    whole: bool,
) -> Result<()> {
    let session = state.session_dir(&grant.grant_id);
    let overlay = session.join("overlay");
    let _ = std::fs::remove_dir_all(session.join("staging"));
    let host = crate::host::HostRoot::open(&grant.root).ctx(|| "host tree")?;

    // The grant's files: the host's truth now.
    let deleted: BTreeSet<&str> = applied
        .iter()
        .filter(|(_, op)| *op == Op::Delete)
        .map(|(p, _)| p.as_str())
        .collect();
    let mut files: Vec<FileMatch> = grant
        .files
        .iter()
        .filter(|f| !deleted.contains(f.path.as_str()))
        .cloned()
        .collect();
    for (path, op) in applied {
        if *op == Op::Delete {
            continue;
        }
        let st = host.lstat(path).ctx(|| format!("host file {path}"))?;
        let symlink = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
        let entry = FileMatch {
            path: path.clone(),
            file_type: FileType::detect(path),
            size_bytes: st.st_size as u64,
            symlink,
        };
        match files.iter_mut().find(|f| f.path == *path) {
            Some(f) => *f = entry,
            None => files.push(entry),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut new_grant = grant.clone();
    new_grant.total_size_bytes = files.iter().map(|f| f.size_bytes).sum();
    new_grant.files = files;

    if whole {
        let _ = std::fs::remove_dir_all(&overlay);
        return state.update_grant(&new_grant);
    }

    // Partial: committed nodes read from the host again.
    let mut fin = Tree::from_files(&grant.files);
    let (mut seen, objects) = crate::overlay::inspect(&session, &mut fin)?;
    let mut dropped = Vec::new();
    for (path, op) in applied {
        seen.remove(path);
        if *op == Op::Delete {
            continue;
        }
        if let Some(ino) = fin.lookup_path(path) {
            if let Some(Origin::Upper(o)) = fin.get(ino).map(|n| n.origin.clone()) {
                dropped.push((o, fin.get(ino).map_or(Kind::File, |n| n.kind)));
            }
            fin.set_origin(ino, Origin::InPlace);
        }
    }
    let base = Tree::from_files(&new_grant.files);
    let records: Vec<Record> = compact(&base, &fin, &seen);
    let mut text = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut text, r)
            .map_err(|e| crate::error::Error::invalid(e.to_string()))?;
        text.push(b'\n');
    }
    // The grant first: a crash between the two leaves a journal that still
    // replays (puts and dels of paths the new grant also has).
    state.update_grant(&new_grant)?;
    crate::state::write_atomic(&overlay.join("journal.jsonl"), &text)?;
    for (o, kind) in dropped {
        let p = crate::overlay::object_path(&objects, o);
        let _ = if kind == Kind::Dir {
            std::fs::remove_dir(p)
        } else {
            std::fs::remove_file(p)
        };
    }
    Ok(())
}
