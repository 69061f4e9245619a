//! Policies (`policy/*.toml`): the seed's `WorkspaceAccess` fields. The
//! default policy is compiled in, so `wopfs grant` works without files.
//!
//! **Secrets by default.** The built-in secret denies
//! (`policy/builtin-denies.toml`, the one definition of that list) apply to
//! every policy, shipped or custom: a loaded policy's `deny_patterns` are
//! the built-in list followed by the file's own patterns, unless the file
//! opts out with `inherit_default_denies = false`. A custom policy that
//! says nothing about denies therefore never grants `.env` or `.git/`.

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
    /// As written in the file while parsing; once loaded, the effective
    /// list: the built-in secret denies ([`builtin_denies`], unless
    /// `inherit_default_denies` is false) followed by the file's own.
    #[serde(default)]
    pub deny_patterns: Vec<String>,
    /// Whether the built-in secret denies apply (they do unless a policy
    /// says `inherit_default_denies = false`).
    #[serde(default = "yes")]
    pub inherit_default_denies: bool,
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
    /// Whether a regular file with more than one hard link may be granted
    /// (or searched). Its other names cannot be found cheaply, so one of
    /// them may be a denied file (`ln .env src/x.py`): policies that must
    /// rule that out say false (the strict one does). Either way the
    /// grant counts such files (`hardlinked_files`).
    #[serde(default = "yes")]
    pub allow_hardlinks: bool,
}

fn root_only() -> Vec<u32> {
    vec![0]
}

/// The built-in secret denies, as shipped in `policy/builtin-denies.toml`.
const BUILTIN_DENIES: &str = include_str!("../policy/builtin-denies.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyList {
    deny_patterns: Vec<String>,
}

/// The built-in secret denies every policy keeps unless it says
/// `inherit_default_denies = false` (VCS internals, environment files,
/// private keys and keystores, cloud and registry credentials).
pub fn builtin_denies() -> Result<Vec<String>> {
    toml::from_str::<DenyList>(BUILTIN_DENIES)
        .map(|l| l.deny_patterns)
        .map_err(|e| {
            Error::invalid(format!(
                "the built-in deny list is invalid: {}",
                e.message()
            ))
        })
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
        if policy.inherit_default_denies {
            let mut deny = builtin_denies()?;
            deny.append(&mut policy.deny_patterns);
            policy.deny_patterns = deny;
        }
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
        assert!(d.allow_hardlinks && !s.allow_hardlinks);
        // The default policy's deny list is the built-in one, exactly; the
        // strict one keeps it and adds its own.
        let builtin = builtin_denies().unwrap();
        assert!(builtin.len() > 20, "{builtin:?}");
        assert_eq!(d.deny_patterns, builtin);
        assert!(s.deny_patterns.starts_with(&builtin));
        assert!(s.deny_patterns.contains(&"**/*secret*".to_string()));
        let strict = DenySet::new(&s.deny_patterns).unwrap();
        assert!(strict.matches(".env") && strict.matches("db/app.sqlite"));
    }

    #[test]
    fn the_builtin_deny_list_is_defined_once() {
        // The shipped policies inherit it instead of repeating it.
        for (name, text) in BUILTIN {
            for p in ["**/.env", "**/.git\"", "**/*.pem", "**/.aws"] {
                assert!(!text.contains(p), "policy/{name}.toml repeats {p}");
            }
        }
        assert!(BUILTIN_DENIES.contains("\"**/.env\""));
    }

    /// A custom policy that says nothing about denies keeps every built-in
    /// secret deny; its own patterns add to them.
    #[test]
    fn custom_policies_keep_the_builtin_denies() {
        let p = Policy::parse("enabled = true\n", "custom.toml").unwrap();
        assert!(p.inherit_default_denies && p.allow_hardlinks);
        assert_eq!(p.deny_patterns, builtin_denies().unwrap());
        let deny = DenySet::new(&p.deny_patterns).unwrap();
        for secret in [".env", ".git/config", ".git", "a/.env.local", "k/id_rsa"] {
            assert!(deny.matches(secret), "custom policy must deny {secret}");
        }
        let p = Policy::parse(
            "enabled = true\ndeny_patterns = [\"docs/private/**\"]\n",
            "custom.toml",
        )
        .unwrap();
        let deny = DenySet::new(&p.deny_patterns).unwrap();
        assert!(deny.matches(".env") && deny.matches("docs/private/a.md"));
        assert!(!deny.matches("docs/public.md"));
        assert_eq!(p.deny_patterns.last().unwrap(), "docs/private/**");
    }

    #[test]
    fn inheriting_the_builtin_denies_can_be_turned_off() {
        let p = Policy::parse(
            "enabled = true\ninherit_default_denies = false\n",
            "open.toml",
        )
        .unwrap();
        assert!(p.deny_patterns.is_empty());
        let p = Policy::parse(
            "enabled = true\ninherit_default_denies = false\ndeny_patterns = [\"**/.env\"]\nallow_hardlinks = false\n",
            "open.toml",
        )
        .unwrap();
        assert_eq!(p.deny_patterns, vec!["**/.env".to_string()]);
        assert!(!p.allow_hardlinks);
        let deny = DenySet::new(&p.deny_patterns).unwrap();
        assert!(deny.matches(".env") && !deny.matches(".git/config"));
        let err = Policy::parse("inherit_default_denies = \"no\"\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`inherit_default_denies`"), "{err}");
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
