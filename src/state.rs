//! The state dir (`--state-dir`, `WOPFS_STATE_DIR`, or
//! `$XDG_STATE_HOME/wopfs`): one directory per session, holding the grant
//! (with a keyed MAC, so an edited grant is refused), its mount record and,
//! later, its overlay. It must live outside every host tree and mount.
//!
//! ```text
//! STATE/key                      32 random bytes (0600): the MAC key
//! STATE/sessions/g-…/grant.json  the grant
//! STATE/sessions/g-…/grant.mac   blake3 keyed hash of grant.json
//! STATE/sessions/g-…/mount.json  {pid, mountpoint} while a daemon serves it
//! STATE/sessions/g-…/daemon.log  the mount daemon's log
//! STATE/sessions/g-…/revoked     MAC line, then the revocation JSON (`wopfs revoke`)
//! STATE/buckets.toml             bucket names of host trees (`crate::bucket`)
//! STATE/tokens/…                 claims of known grant tokens (`crate::chain`)
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::grant::Grant;

pub struct StateDir {
    root: PathBuf,
}

/// Where a session is mounted, written by its daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountRecord {
    pub pid: u32,
    pub mountpoint: PathBuf,
    /// Served by `wopfs run` (a temporary mountpoint that ends with the
    /// command), not by `wopfs mount`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run: bool,
    /// The engine of a writable overlay view (`fuse` or `kernel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<crate::overlay::engine::Engine>,
}

impl StateDir {
    /// The state dir from the flag/env, or the XDG default.
    pub fn locate(flag: Option<PathBuf>) -> Result<PathBuf> {
        if let Some(p) = flag {
            return Ok(p);
        }
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
            return Ok(PathBuf::from(x).join("wopfs"));
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".local/state/wopfs")),
            None => Err(Error::invalid(
                "no state dir: pass --state-dir or set WOPFS_STATE_DIR (HOME is unset)",
            )),
        }
    }

    /// Opens (creating, mode 0700) the state dir at `path`.
    pub fn open(path: &Path) -> Result<StateDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path.join("sessions"))
            .ctx(|| format!("creating state dir {}", path.display()))?;
        let root = fs::canonicalize(path).ctx(|| format!("state dir {}", path.display()))?;
        Ok(StateDir { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn session_dir(&self, grant_id: &str) -> PathBuf {
        self.root.join("sessions").join(grant_id)
    }

    /// The MAC key, created on first use.
    fn key(&self) -> Result<[u8; 32]> {
        let path = self.root.join("key");
        match fs::read(&path) {
            Ok(k) if k.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&k);
                Ok(key)
            }
            Ok(_) => Err(Error::invalid(format!(
                "state dir key {} is corrupt (it must hold 32 bytes)",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| {
                    Error::io(
                        "generating the state dir key",
                        std::io::Error::other(e.to_string()),
                    )
                })?;
                let tmp = self.root.join(format!("key.{}", std::process::id()));
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .ctx(|| format!("creating {}", tmp.display()))?;
                f.write_all(&key)
                    .and_then(|_| f.sync_all())
                    .ctx(|| "writing the state dir key")?;
                // Two first uses may race: the first link wins, the other reads it.
                let linked = fs::hard_link(&tmp, &path);
                let _ = fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(key),
                    Err(_) => self.key(),
                }
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// A keyed hash of `data` under the state dir's key, for records kept
    /// beside the grants (callers put a domain of their own in `data`).
    pub fn mac(&self, data: &[u8]) -> Result<blake3::Hash> {
        Ok(blake3::keyed_hash(&self.key()?, data))
    }

    /// Records a new grant, giving it a fresh id.
    pub fn create_grant(&self, mut grant: Grant) -> Result<Grant> {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| {
            Error::io(
                "generating a grant id",
                std::io::Error::other(e.to_string()),
            )
        })?;
        grant.grant_id = format!("g-{}", hex(&raw));
        let dir = self.session_dir(&grant.grant_id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx(|| format!("creating session dir {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(&grant)
            .map_err(|e| Error::invalid(format!("serializing grant: {e}")))?;
        let mac = blake3::keyed_hash(&self.key()?, &json).to_hex();
        write_atomic(&dir.join("grant.json"), &json)?;
        write_atomic(&dir.join("grant.mac"), mac.as_bytes())?;
        Ok(grant)
    }

    /// Rewrites a grant after a commit changed its host truth (re-MACed).
    pub fn update_grant(&self, grant: &Grant) -> Result<()> {
        let dir = self.session_dir(&grant.grant_id);
        let json = serde_json::to_vec_pretty(grant)
            .map_err(|e| Error::invalid(format!("serializing grant: {e}")))?;
        let mac = blake3::keyed_hash(&self.key()?, &json).to_hex();
        // Two steps a crash cannot break: the new MAC waits beside the old
        // one until the new grant is in place (load_grant accepts either).
        write_atomic(&dir.join("grant.mac.new"), mac.as_bytes())?;
        write_atomic(&dir.join("grant.json"), &json)?;
        std::fs::rename(dir.join("grant.mac.new"), dir.join("grant.mac"))
            .ctx(|| format!("updating the MAC of grant {}", grant.grant_id))
    }

    /// Loads a grant, refusing unknown ids and grants edited since issue.
    pub fn load_grant(&self, grant_id: &str) -> Result<Grant> {
        self.load_grant_as::<Grant>(grant_id)
    }

    /// The mode of a grant, checked as [`StateDir::load_grant`] checks the
    /// whole record, without building its file list (a large grant's list
    /// costs tens of milliseconds to parse; a checkpoint needs none of it).
    pub fn grant_mode(&self, grant_id: &str) -> Result<crate::policy::Mode> {
        #[derive(serde::Deserialize)]
        struct Head {
            grant_id: String,
            mode: crate::policy::Mode,
        }
        impl HasId for Head {
            fn id(&self) -> &str {
                &self.grant_id
            }
        }
        Ok(self.load_grant_as::<Head>(grant_id)?.mode)
    }

    fn load_grant_as<G: serde::de::DeserializeOwned + HasId>(&self, grant_id: &str) -> Result<G> {
        if !is_grant_id(grant_id) {
            return Err(Error::unknown_grant(format!(
                "unknown grant {grant_id:?}: grant ids look like g-0123456789abcdef"
            )));
        }
        let dir = self.session_dir(grant_id);
        let json = match fs::read(dir.join("grant.json")) {
            Ok(j) => j,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::unknown_grant(format!(
                    "unknown grant {grant_id} (no such grant in state dir {})",
                    self.root.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("reading grant {grant_id}"), e)),
        };
        let expect = blake3::keyed_hash(&self.key()?, &json);
        let matches = |name: &str| {
            let mac = fs::read_to_string(dir.join(name)).unwrap_or_default();
            blake3::Hash::from_hex(mac.trim()).is_ok_and(|m| m == expect)
        };
        let ok = matches("grant.mac")
            || matches("grant.mac.new")
                && fs::rename(dir.join("grant.mac.new"), dir.join("grant.mac")).is_ok();
        if !ok {
            return Err(Error::policy(format!(
                "grant {grant_id} has been tampered with: its record does not match its MAC"
            )));
        }
        let grant: G = serde_json::from_slice(&json)
            .map_err(|e| Error::invalid(format!("grant {grant_id} is malformed: {e}")))?;
        if grant.id() != grant_id {
            return Err(Error::policy(format!(
                "grant {grant_id} has been tampered with: it records id {}",
                grant.id()
            )));
        }
        Ok(grant)
    }

    /// Every grant id in the state dir, sorted.
    pub fn grant_ids(&self) -> Result<Vec<String>> {
        let dir = self.root.join("sessions");
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .ctx(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_grant_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn write_mount_record(&self, grant_id: &str, rec: &MountRecord) -> Result<()> {
        let json = serde_json::to_vec(rec).map_err(|e| Error::invalid(e.to_string()))?;
        write_atomic(&self.session_dir(grant_id).join("mount.json"), &json)
    }

    pub fn clear_mount_record(&self, grant_id: &str) {
        let _ = fs::remove_file(self.session_dir(grant_id).join("mount.json"));
    }

    /// The mount record of a session whose daemon is still alive.
    pub fn live_mount(&self, grant_id: &str) -> Option<MountRecord> {
        let text = fs::read(self.session_dir(grant_id).join("mount.json")).ok()?;
        let rec: MountRecord = serde_json::from_slice(&text).ok()?;
        pid_alive(rec.pid).then_some(rec)
    }

    pub fn log_path(&self, grant_id: &str) -> PathBuf {
        self.session_dir(grant_id).join("daemon.log")
    }
}

/// A grant's revocation, recorded by `wopfs revoke` (`STATE/sessions/g-…/revoked`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub grant_id: String,
    /// RFC 3339, UTC.
    pub revoked_at: String,
    /// Who revoked it (as the audit log names actors).
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

const REVOCATION_DOMAIN: &[u8] = b"wopfs grant revocation\n";

impl StateDir {
    /// The file whose existence revokes a grant: what a serving daemon polls.
    pub fn revocation_path(&self, grant_id: &str) -> PathBuf {
        self.session_dir(grant_id).join("revoked")
    }

    /// Records `rev`, once: a grant revoked already is a conflict that
    /// names the first revocation. Written whole (temp file, fsync, link),
    /// so the file a daemon sees is complete.
    pub fn record_revocation(&self, rev: &Revocation) -> Result<()> {
        if let Some(first) = self.revocation(&rev.grant_id)? {
            return Err(Error::conflict(format!(
                "grant {} is already revoked (at {} by {})",
                rev.grant_id, first.revoked_at, first.actor
            )));
        }
        let json = serde_json::to_vec(rev).map_err(|e| Error::invalid(e.to_string()))?;
        let mac = self.mac(&[REVOCATION_DOMAIN, &json].concat())?.to_hex();
        let path = self.revocation_path(&rev.grant_id);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut data = format!("{mac}\n").into_bytes();
        data.extend_from_slice(&json);
        write_atomic(&tmp, &data)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::conflict(
                format!("grant {} is already revoked", rev.grant_id),
            )),
            Err(e) => Err(Error::io(
                format!("recording the revocation of {}", rev.grant_id),
                e,
            )),
        }
    }

    /// The grant's revocation, if any. A record that does not match its MAC
    /// is an error (the caller refuses: a revocation is never undone by
    /// editing it).
    pub fn revocation(&self, grant_id: &str) -> Result<Option<Revocation>> {
        let path = self.revocation_path(grant_id);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let tampered = || {
            Error::policy(format!(
                "grant {grant_id} is revoked, and its revocation record has been tampered with"
            ))
        };
        let (mac, json) = data
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| (&data[..i], &data[i + 1..]))
            .ok_or_else(tampered)?;
        let expect = self.mac(&[REVOCATION_DOMAIN, json].concat())?;
        let ok = std::str::from_utf8(mac)
            .ok()
            .and_then(|m| blake3::Hash::from_hex(m.trim()).ok())
            .is_some_and(|m| m == expect);
        let rev: Revocation = match serde_json::from_slice(json) {
            Ok(r) if ok => r,
            _ => return Err(tampered()),
        };
        if rev.grant_id != grant_id {
            return Err(tampered());
        }
        Ok(Some(rev))
    }

    /// Refuses to `what` (mount, run, commit) a revoked grant.
    pub fn check_not_revoked(&self, grant_id: &str, what: &str) -> Result<()> {
        match self.revocation(grant_id)? {
            None => Ok(()),
            Some(r) => Err(Error::policy(format!(
                "cannot {what}: grant {grant_id} was revoked at {} by {}{}",
                r.revoked_at,
                r.actor,
                r.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ))),
        }
    }
}

pub fn is_grant_id(s: &str) -> bool {
    s.len() == 18 && s.starts_with("g-") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether process `pid` is running (a zombie waiting to be reaped is not).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `data` to `path` through a temp file, fsync and rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.ctx(|| format!("writing {}", path.display()))
}

/// A grant record, whole or in part, that names its id.
trait HasId {
    fn id(&self) -> &str;
}

impl HasId for Grant {
    fn id(&self) -> &str {
        &self.grant_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::{resolve, GrantRequest};
    use crate::policy::{Mode, Policy};

    fn grant(root: &Path) -> Grant {
        std::fs::write(root.join("a.txt"), "a").unwrap();
        let req = GrantRequest {
            purpose: "p".into(),
            ..GrantRequest::for_test(root, Mode::ReadOnly)
        };
        resolve(
            &req,
            &Policy::builtin_default().unwrap(),
            &crate::clock::SystemClock,
        )
        .unwrap()
    }

    #[test]
    fn grants_round_trip_and_tampering_is_detected() {
        let host = tempfile::tempdir().unwrap();
        let st = tempfile::tempdir().unwrap();
        let state = StateDir::open(st.path()).unwrap();
        let g = state.create_grant(grant(host.path())).unwrap();
        assert!(is_grant_id(&g.grant_id));
        let back = state.load_grant(&g.grant_id).unwrap();
        assert_eq!(back.files, g.files);
        assert_eq!(state.grant_ids().unwrap(), vec![g.grant_id.clone()]);

        let path = state.session_dir(&g.grant_id).join("grant.json");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("read_only", "read_write_direct")).unwrap();
        let e = state.load_grant(&g.grant_id).unwrap_err().to_string();
        assert!(e.contains("tampered"), "{e}");

        let e = state
            .load_grant("g-0000000000000000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown grant g-0000000000000000"), "{e}");
        let e = state.load_grant("../../etc").unwrap_err().to_string();
        assert!(e.contains("unknown grant"), "{e}");
    }

    #[test]
    fn revocations_are_recorded_once_and_tampering_refuses() {
        let host = tempfile::tempdir().unwrap();
        let st = tempfile::tempdir().unwrap();
        let state = StateDir::open(st.path()).unwrap();
        let g = state.create_grant(grant(host.path())).unwrap();
        let id = g.grant_id.clone();
        assert_eq!(state.revocation(&id).unwrap(), None);
        state.check_not_revoked(&id, "mount").unwrap();
        let rev = Revocation {
            grant_id: id.clone(),
            revoked_at: "2026-01-01T00:00:00Z".into(),
            actor: "uid 0".into(),
            reason: Some("leaked".into()),
        };
        state.record_revocation(&rev).unwrap();
        assert_eq!(state.revocation(&id).unwrap(), Some(rev.clone()));
        let e = state
            .check_not_revoked(&id, "mount")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot mount") && e.contains("(leaked)"), "{e}");
        let e = state.record_revocation(&rev).unwrap_err().to_string();
        assert!(e.contains("already revoked"), "{e}");

        let path = state.revocation_path(&id);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("leaked", "fine")).unwrap();
        let e = state
            .check_not_revoked(&id, "mount")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tampered"), "{e}");
    }
}
