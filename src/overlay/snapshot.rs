//! Placeholder until the snapshot store lands (same API).
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SnapStats {
    pub entries: u64,
    pub copied: u64,
    pub linked: u64,
    pub bytes_copied: u64,
    pub gone_since_prev: u64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreStats {
    pub kept: u64,
    pub restored: u64,
    pub removed: u64,
    pub bytes_copied: u64,
}

pub fn snapshot(
    _live: &Path,
    _ckpt: &Path,
    _prev: Option<&Path>,
    _skip: &dyn Fn(&str) -> bool,
) -> Result<SnapStats> {
    Err(Error::invalid("snapshot: not yet"))
}

pub fn restore(_live: &Path, _ckpt: &Path, _skip: &dyn Fn(&str) -> bool) -> Result<RestoreStats> {
    Err(Error::invalid("restore: not yet"))
}
