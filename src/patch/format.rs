//! The patch-set format other programs read and write (`patchset.json`;
//! its JSON Schema is `schema/patchset.schema.json`): the seed's
//! WorkspacePatch fields plus what a safe commit needs. Only the types live
//! here; `set.rs` builds, exports, loads and validates sets, `links.rs`
//! checks their hard links.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Op;

pub const FORMAT: &str = "wopfs.patchset/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatch {
    pub grant_id: String,
    pub path: String,
    pub operation: Op,
    /// The new content, base64; absent when it lives in `blobs/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `blake3:<hex>` of the new content (create, update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// `blake3:<hex>` of the host content the agent saw (update, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `st_mode` of the new entry, type bits included (a symlink's content
    /// is its target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A hard link: another path of this set that this path is a name of
    /// (after a commit both paths are one file on the host). That path
    /// creates or updates a regular file and is no link itself (a file's
    /// first path, by sort order, carries its content); this patch is a
    /// create or update carrying that path's `blob`, `mode` and `size`,
    /// and never a `content` of its own. Absent on every other patch, so a
    /// set without links is what it was before links existed; a reader
    /// that does not know the field refuses a set with one
    /// (`deny_unknown_fields`) instead of committing copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSet {
    pub format: String,
    pub grant_id: String,
    pub root: PathBuf,
    pub created_at: String,
    pub patches: Vec<WorkspacePatch>,
}

impl WorkspacePatch {
    pub fn is_symlink(&self) -> bool {
        self.mode.is_some_and(|m| m & libc::S_IFMT == libc::S_IFLNK)
    }
}
