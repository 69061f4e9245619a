//! Grants: one approved access to a bounded set of files of a host tree.

mod filetype;
mod resolve;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use filetype::FileType;
pub use resolve::{resolve, GrantRequest};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::policy::Mode;

/// One granted file (the seed's `FileMatch`, without search scores).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    pub path: String,
    pub file_type: FileType,
    pub size_bytes: u64,
    /// A symlink granted as a link (its target stays inside the root).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub symlink: bool,
}

/// The seed's `WorkspaceGrant`, plus what the view and a later commit need:
/// the root, the patterns, the limits in force and the write prefixes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub grant_id: String,
    pub purpose: String,
    pub reason: String,
    pub mode: Mode,
    /// Absolute, canonical path of the host tree.
    pub root: PathBuf,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: Option<String>,
    pub requires_human_approval: bool,
    pub allow_patterns: Vec<String>,
    /// The grant's own deny patterns followed by the policy's.
    pub deny_patterns: Vec<String>,
    #[serde(default)]
    pub write_prefixes: Vec<String>,
    /// The policy the grant was checked against (a path or `builtin:NAME`).
    pub policy: String,
    pub max_files: u64,
    pub max_total_size_bytes: u64,
    pub total_size_bytes: u64,
    pub files: Vec<FileMatch>,
    /// From the policy: whether a commit may write symlinks.
    #[serde(default = "yes")]
    pub commit_symlinks: bool,
    /// Whether files `.gitignore` ignores were walked too (`--include-ignored`).
    #[serde(default)]
    pub include_ignored: bool,
    /// From the policy: whether files with more than one hard link may be
    /// granted.
    #[serde(default = "yes")]
    pub allow_hardlinks: bool,
    /// How many files matching the grant's patterns have more than one
    /// hard link (granted, or left out when `allow_hardlinks` is false).
    #[serde(default)]
    pub hardlinked_files: u64,
    /// The files left out for having more than one hard link.
    #[serde(default)]
    pub hardlinks_left_out: Vec<String>,
    /// Where the root stood in its git repository when the grant was made
    /// (the parent of `wopfs commit --git-branch`); `None` outside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<crate::git::Origin>,
}

fn yes() -> bool {
    true
}

impl Grant {
    pub fn expires_at_time(&self) -> Result<Option<SystemTime>> {
        self.expires_at
            .as_deref()
            .map(|s| {
                humantime::parse_rfc3339(s).map_err(|e| {
                    Error::invalid(format!(
                        "grant {} has an invalid expires_at {s:?}: {e}",
                        self.grant_id
                    ))
                })
            })
            .transpose()
    }

    /// Whether the grant has expired by `clock` (expiry is inclusive: a
    /// grant is dead at its `expires_at`).
    pub fn is_expired(&self, clock: &dyn Clock) -> Result<bool> {
        Ok(self.expires_at_time()?.is_some_and(|t| clock.now() >= t))
    }

    /// Refuses an expired grant with a clear error.
    pub fn check_live(&self, clock: &dyn Clock) -> Result<()> {
        if self.is_expired(clock)? {
            return Err(Error::policy(format!(
                "grant {} expired at {}",
                self.grant_id,
                self.expires_at.as_deref().unwrap_or("?")
            )));
        }
        Ok(())
    }
}

/// Formats a time as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The longest lifetime a grant or a token may be given (10 years): far
/// enough for any use, near enough that every expiry stays a valid time.
pub const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// Parses a lifetime such as `90s`, `30m`, `2h`, `1d`, `1h30m` given to
/// `flag`: from 1s to [`MAX_TTL`].
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration> {
    parse_duration_in(flag, s, Duration::from_secs(1), MAX_TTL)
}

/// Writes a duration the way the flags take it (`3650d`, `1s`, `250ms`).
pub fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        return humantime::format_duration(d).to_string().replace(' ', "");
    }
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses a duration given to `flag` and checks it lies in `min..=max`;
/// every error names the flag and the range.
pub fn parse_duration_in(flag: &str, s: &str, min: Duration, max: Duration) -> Result<Duration> {
    let range = format!("from {} to {}", show_duration(min), show_duration(max));
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        Error::invalid(format!(
            "invalid {flag} {s:?}: {e} (a duration {range}, such as 30s, 30m, 2h or 1d)"
        ))
    })?;
    if d.is_zero() && !min.is_zero() {
        return Err(Error::invalid(format!(
            "invalid {flag}: it must be longer than zero ({range})"
        )));
    }
    if d < min || d > max {
        return Err(Error::invalid(format!(
            "invalid {flag} {s:?}: it must be {range}"
        )));
    }
    Ok(d)
}

/// When something given `ttl` at `now` expires, rounded up to the whole
/// second it is stored to (never sooner than asked: a 1 s grant is not
/// born expired); a clear error, never an overflow, for a lifetime past
/// [`MAX_TTL`].
pub fn expiry(now: SystemTime, ttl: Duration) -> Result<SystemTime> {
    now.checked_add(ttl)
        .map(crate::clock::ceil_to_second)
        .filter(|_| ttl <= MAX_TTL)
        .ok_or_else(|| {
            Error::invalid(format!(
                "a lifetime of {}s is too long (at most {})",
                ttl.as_secs(),
                show_duration(MAX_TTL)
            ))
        })
}
