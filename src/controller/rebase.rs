//! After a commit the host holds what the overlay held: the session is
//! rebased so the committed paths are no longer pending. The grant's file
//! list becomes the host's new truth (created paths added, deleted ones
//! removed), committed nodes read from the host again, their objects are
//! dropped and the journal is rewritten against the new file list. After a
//! whole commit the overlay is released.
//!
//! The new state is computed and staged (`commit-stage/`) before the commit
//! point and installed after it; every install step can be repeated, so a
//! commit killed at any instant after its commit point finishes the same
//! way on recovery.
//!
//! A kernel-engine session has no journal: its upper directory is the
//! state. After a partial commit, the upper entries of committed files and
//! symlinks are removed where the lower (the view of the new grant, which
//! holds them now) then shows through, so later edits copy them up afresh
//! and get a known base. Entries beneath an opaque directory stay; they
//! hold what the host holds now, so the reader drops them as no-op
//! copy-ups. Whiteouts of committed deletions stay: they hide names the
//! new grant no longer has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::grant::{FileMatch, FileType, Grant};
use crate::host::HostRoot;
use crate::overlay::engine::Engine;
use crate::overlay::journal::{compact, Record};
use crate::overlay::Objects;
use crate::patch::set::WorkspacePatch;
use crate::patch::Op;
use crate::state::StateDir;
use crate::tree::{Kind, Origin, Tree};

fn stage_dir(session: &Path) -> PathBuf {
    session.join("commit-stage")
}

#[derive(Serialize, Deserialize)]
struct Drops {
    whole: bool,
    /// Overlay objects the committed paths leave behind.
    objects: Vec<(PathBuf, bool)>,
    /// A kernel-engine session: no journal; `upper` is what goes.
    #[serde(default)]
    kernel: bool,
    /// Kernel engine: upper entries (relative to the upper) to remove.
    #[serde(default)]
    upper: Vec<String>,
}

/// Computes the session after `done` (the patches now on the host) and
/// stages it. Nothing the session reads changes until `install`.
pub fn prepare(
    state: &StateDir,
    grant: &Grant,
    done: &[&WorkspacePatch],
    whole: bool,
) -> Result<()> {
    let session = state.session_dir(&grant.grant_id);
    let stage = stage_dir(&session);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).ctx(|| format!("creating {}", stage.display()))?;

    // The grant's files: the host's truth after the commit.
    let deleted: BTreeSet<&str> = done
        .iter()
        .filter(|p| p.operation == Op::Delete)
        .map(|p| p.path.as_str())
        .collect();
    let mut files: Vec<FileMatch> = grant
        .files
        .iter()
        .filter(|f| !deleted.contains(f.path.as_str()))
        .cloned()
        .collect();
    for p in done.iter().filter(|p| p.operation != Op::Delete) {
        let entry = FileMatch {
            path: p.path.clone(),
            file_type: FileType::detect(&p.path),
            size_bytes: p.size.unwrap_or(0),
            symlink: p.is_symlink(),
        };
        match files.iter_mut().find(|f| f.path == p.path) {
            Some(f) => *f = entry,
            None => files.push(entry),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut new_grant = grant.clone();
    new_grant.total_size_bytes = files.iter().map(|f| f.size_bytes).sum();
    new_grant.files = files;
    // A whole commit ends the session: its grant is never read for a view
    // again, so it keeps the files it was cut with (and the commit skips
    // rewriting a record that grows with the tree).
    if !whole {
        let json = serde_json::to_vec(&new_grant).map_err(|e| Error::invalid(e.to_string()))?;
        crate::state::write_atomic(&stage.join("grant.json"), &json)?;
    }

    let mut drops = Drops {
        whole,
        objects: Vec::new(),
        kernel: false,
        upper: Vec::new(),
    };
    if !whole {
        // Partial: committed nodes read from the host again.
        let mut fin = Tree::from_files(&grant.files);
        let (mut seen, objects) = crate::overlay::inspect(grant, &session, &mut fin)?;
        if objects.engine() == Engine::Kernel {
            drops.kernel = true;
            drops.upper = kernel_drops(&objects, &fin, done);
            let json = serde_json::to_vec(&drops).map_err(|e| Error::invalid(e.to_string()))?;
            return crate::state::write_atomic(&stage.join("drops.json"), &json);
        }
        for p in done {
            seen.remove(&p.path);
            if p.operation == Op::Delete {
                continue;
            }
            if let Some(ino) = fin.lookup_path(&p.path) {
                if let Some(n) = fin.get(ino) {
                    if let Some(path) = match n.origin {
                        Origin::Upper(o) => objects.path(o),
                        _ => None,
                    } {
                        drops.objects.push((path, n.kind == Kind::Dir));
                    }
                }
                fin.set_origin(ino, Origin::InPlace);
            }
        }
        let base = Tree::from_files(&new_grant.files);
        let records: Vec<Record> = compact(&base, &fin, &seen);
        let mut text = Vec::new();
        for r in &records {
            serde_json::to_writer(&mut text, r).map_err(|e| Error::invalid(e.to_string()))?;
            text.push(b'\n');
        }
        crate::state::write_atomic(&stage.join("journal.jsonl"), &text)?;
    }
    let json = serde_json::to_vec(&drops).map_err(|e| Error::invalid(e.to_string()))?;
    crate::state::write_atomic(&stage.join("drops.json"), &json)
}

/// The upper entries of a kernel session that the committed files and
/// symlinks (`done`) leave behind, where the lower shows through. An entry
/// of the upper is at its path in the view (each name of a hard-linked
/// file has its own).
fn kernel_drops(objects: &Objects, fin: &Tree, done: &[&WorkspacePatch]) -> Vec<String> {
    let in_upper = |path: &str| {
        fin.lookup_path(path)
            .and_then(|i| fin.get(i))
            .is_some_and(|n| matches!(n.origin, Origin::Upper(_)))
    };
    done.iter()
        .filter(|p| p.operation != Op::Delete && in_upper(&p.path))
        .filter(|p| objects.lower_shows_through(&p.path))
        .map(|p| p.path.clone())
        .collect()
}

/// Installs what `prepare` staged. Safe to run again after a crash at any
/// point; a no-op when nothing is staged.
pub fn install(state: &StateDir, grant_id: &str) -> Result<()> {
    let session = state.session_dir(grant_id);
    let stage = stage_dir(&session);
    let Ok(json) = std::fs::read(stage.join("drops.json")) else {
        let _ = std::fs::remove_dir_all(&stage);
        return Ok(());
    };
    let drops: Drops = serde_json::from_slice(&json)
        .map_err(|e| Error::invalid(format!("the staged commit is damaged: {e}")))?;
    let overlay = session.join("overlay");
    if drops.whole {
        // One rename releases the overlay whole: a crash while it is being
        // removed never leaves a half overlay that would not replay.
        let dropped = session.join("overlay.dropped");
        let _ = std::fs::remove_dir_all(&dropped);
        match std::fs::rename(&overlay, &dropped) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("releasing the committed overlay", e)),
        }
        let _ = std::fs::remove_dir_all(&dropped);
    } else {
        let grant_json =
            std::fs::read(stage.join("grant.json")).ctx(|| "reading the staged grant")?;
        let new_grant: Grant = serde_json::from_slice(&grant_json)
            .map_err(|e| Error::invalid(format!("the staged grant is damaged: {e}")))?;
        if new_grant.grant_id != grant_id {
            return Err(Error::invalid(format!(
                "the staged commit names grant {}, not {grant_id}",
                new_grant.grant_id
            )));
        }
        // The grant first: a crash between the two leaves a journal that
        // still replays (puts and dels of paths the new grant also has),
        // and the staged journal is installed on the next try anyway.
        state.update_grant(&new_grant)?;
        super::apply::fault_point()?;
        if drops.kernel {
            remove_upper_entries(&session, &drops.upper)?;
            return std::fs::remove_dir_all(&stage).ctx(|| format!("removing {}", stage.display()));
        }
        let text =
            std::fs::read(stage.join("journal.jsonl")).ctx(|| "reading the staged journal")?;
        crate::state::write_atomic(&overlay.join("journal.jsonl"), &text)?;
        for (p, dir) in &drops.objects {
            let _ = if *dir {
                std::fs::remove_dir(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
    std::fs::remove_dir_all(&stage).ctx(|| format!("removing {}", stage.display()))
}

/// Removes entries of a kernel session's upper (beneath it, never through
/// a symlink); one already gone is fine.
fn remove_upper_entries(session: &Path, rels: &[String]) -> Result<()> {
    if rels.is_empty() {
        return Ok(());
    }
    let upper = crate::overlay::engine::open_upper(session)?.ok_or_else(|| {
        Error::invalid(format!(
            "the staged commit of {} is for the kernel engine, but the session has no kernel layer",
            session.display()
        ))
    })?;
    let dir = HostRoot::open(&upper.upper).ctx(|| format!("opening {}", upper.upper.display()))?;
    for rel in rels {
        match dir.remove(rel, false) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(Error::io(
                    format!(
                        "removing the committed {rel} from {}",
                        upper.upper.display()
                    ),
                    e,
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Drops a staged rebase that will not be installed (a rolled-back commit).
pub fn discard(state: &StateDir, grant_id: &str) {
    let _ = std::fs::remove_dir_all(stage_dir(&state.session_dir(grant_id)));
}
