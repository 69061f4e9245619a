//! Policies (`policy/*.toml`): the seed's `WorkspaceAccess` fields. The
//! default policy is compiled in, so `wopfs grant` works without files.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::patterns::DenySet;

/// The seed's `WorkspaceMode`, ordered from least to most power.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Mode {
    /// Read only: every write answers EROFS.
    ReadOnly,
    /// Writes land in an overlay; the host changes only by a commit.
    ReadWriteOverlay,
    /// Writes go to the host files, each logged (if the policy allows it).
    ReadWriteDirect,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadOnly => "read_only",
            Mode::ReadWriteOverlay => "read_write_overlay",
            Mode::ReadWriteDirect => "read_write_direct",
        }
    }

    pub fn is_writable(self) -> bool {
        self != Mode::ReadOnly
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const DEFAULT_MAX_TOTAL: u64 = 100 * 1024 * 1024;

fn default_max_total() -> u64 {
    DEFAULT_MAX_TOTAL
}
fn yes() -> bool {
    true
}

/// One deployment's standing rules. Unknown fields are errors, so a typo
/// never silently weakens a policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Where the policy came from (a path or `builtin:NAME`); not in the file.
    #[serde(skip)]
    pub source: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub max_files: u64,
    #[serde(default)]
    pub allowed_modes: Vec<Mode>,
    #[serde(default = "yes")]
    pub require_reason: bool,
    #[serde(default)]
    pub deny_patterns: Vec<String>,
    #[serde(default)]
    pub require_human_approval: bool,
    #[serde(default = "default_max_total")]
    pub max_total_size_bytes: u64,
    /// Uids allowed to commit and reject through `wopfs serve`.
    #[serde(default = "root_only")]
    pub approver_uids: Vec<u32>,
    /// Whether a commit may write symlinks at all (each one must still
    /// point inside the view). The strict policy says no.
    #[serde(default = "yes")]
    pub commit_symlinks: bool,
}

fn root_only() -> Vec<u32> {
    vec![0]
}

const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../policy/default.toml")),
    ("strict", include_str!("../policy/strict.toml")),
];

impl Policy {
    /// Parses policy text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Policy> {
        let mut policy: Policy = toml::from_str(text).map_err(|e| {
            Error::invalid(
                format!(
                    "policy {source} is invalid: {}",
                    e.message().trim_end_matches('.')
                ) + &toml_location(text, &e),
            )
        })?;
        policy.source = source.to_string();
        policy.validate()?;
        Ok(policy)
    }

    /// Loads `spec`: a policy file, or the name of a built-in policy
    /// (`default`, `strict`) when no such file exists.
    pub fn load(spec: &str) -> Result<Policy> {
        let path = Path::new(spec);
        if !path.exists() {
            if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == spec) {
                return Policy::parse(text, &format!("builtin:{name}"));
            }
        }
        let text = std::fs::read_to_string(path).ctx(|| format!("reading policy file {spec}"))?;
        Policy::parse(&text, spec)
    }

    pub fn builtin_default() -> Result<Policy> {
        Policy::load("default")
    }

    fn validate(&self) -> Result<()> {
        if self.max_total_size_bytes == 0 {
            return Err(Error::invalid(format!(
                "policy {} is invalid: max_total_size_bytes must be positive",
                self.source
            )));
        }
        DenySet::new(&self.deny_patterns).map_err(|e| {
            Error::invalid(format!(
                "policy {} is invalid: deny_patterns: {e}",
                self.source
            ))
        })?;
        Ok(())
    }
}

/// " (field `name`, line N)" for a TOML error: the key whose value is at
/// fault is the last `key =` before the error's position.
fn toml_location(text: &str, err: &toml::de::Error) -> String {
    let Some(span) = err.span() else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let key = before.rfind('=').and_then(|eq| {
        let start = before[..eq].rfind('\n').map_or(0, |n| n + 1);
        let key = before[start..eq].trim();
        (!key.is_empty() && !key.contains(['[', ']', '"'])).then_some(key)
    });
    match key {
        Some(key) if !err.message().contains(&format!("`{key}`")) => {
            format!(" (field `{key}`, line {line})")
        }
        _ => format!(" (line {line})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_policies_parse() {
        let d = Policy::builtin_default().unwrap();
        assert!(d.enabled);
        assert_eq!(d.max_files, 200_000);
        assert_eq!(d.max_total_size_bytes, 8 << 30);
        assert_eq!(
            d.allowed_modes,
            vec![Mode::ReadOnly, Mode::ReadWriteOverlay]
        );
        let deny = DenySet::new(&d.deny_patterns).unwrap();
        for secret in [
            ".env",
            "app/.env.production",
            "deploy/id_rsa",
            "deploy/server.pem",
            "home/.ssh/config",
            ".aws/credentials",
            ".git/config",
            "vendor/lib/.git/HEAD",
            "k8s/.kube/config",
        ] {
            assert!(deny.matches(secret), "default policy must deny {secret}");
        }
        for ok in ["src/pay.py", "README.md", "docs/env.md", "src/keys.py"] {
            assert!(!deny.matches(ok), "default policy must not deny {ok}");
        }
        let s = Policy::load("strict").unwrap();
        assert_eq!(s.allowed_modes, vec![Mode::ReadOnly]);
        assert!(s.require_reason && s.require_human_approval);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Policy::parse("enabled = true\nmax_filez = 3\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_filez"), "{err}");
        assert!(err.contains("p.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Policy::parse("enabled = true\nmax_files = -1\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`max_files`") && err.contains("line 2"),
            "{err}"
        );
        let err = Policy::parse("allowed_modes = [\"write_all\"]\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("write_all") && err.contains("`allowed_modes`"),
            "{err}"
        );
        let err = Policy::parse("max_total_size_bytes = 0\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_total_size_bytes"), "{err}");
        let err = Policy::parse("deny_patterns = [\"a/[\"]\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deny_patterns") && err.contains("a/["),
            "{err}"
        );
        let err = Policy::parse("enabled = \"yes\"\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`enabled`"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = Policy::load("/nonexistent/policy.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/policy.toml"), "{err}");
    }

    #[test]
    fn modes_are_ordered_by_power() {
        assert!(Mode::ReadOnly < Mode::ReadWriteOverlay);
        assert!(Mode::ReadWriteOverlay < Mode::ReadWriteDirect);
    }
}
