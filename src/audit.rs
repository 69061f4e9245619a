//! The audit log: append-only JSON lines in the state dir, each carrying the
//! blake3 of the line before it, so an edited, removed or reordered line is
//! detected. `audit.head` holds the count and the last hash, so lines cut
//! from the end are detected too. Events name a WorkspaceOperation
//! (`operationType`, the grant, the actor, the lifecycle event, the
//! outcome); file contents never go into the log.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};

const GENESIS: &str = "blake3:genesis";

/// Lifecycle events of the WorkspaceOperation contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Start,
    Progress,
    Failure,
    Retry,
    Cancel,
    Complete,
}

/// One audit record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub seq: u64,
    pub time: String,
    pub prev: String,
    pub operation_type: String,
    pub grant_id: Option<String>,
    pub actor: String,
    pub event: Event,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

#[derive(Serialize, Deserialize)]
struct Head {
    lines: u64,
    hash: String,
    /// The log's length in bytes at that line (absent in older heads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
}

pub struct Audit {
    path: PathBuf,
    head: PathBuf,
}

fn line_hash(line: &str) -> String {
    format!("blake3:{}", blake3::hash(line.as_bytes()).to_hex())
}

/// Who is acting: `$USER` (or `SUDO_USER` under sudo), else the uid.
pub fn current_actor() -> String {
    let uid = rustix::process::getuid().as_raw();
    let user = std::env::var("SUDO_USER")
        .ok()
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.is_empty());
    match user {
        Some(u) => format!("{u} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

impl Audit {
    pub fn new(state_dir: &Path) -> Audit {
        Audit {
            path: state_dir.join("audit.jsonl"),
            head: state_dir.join("audit.head"),
        }
    }

    /// Appends one event. The log is locked while the chain is extended, so
    /// the daemon and commands can log at the same time.
    pub fn append(
        &self,
        operation_type: &str,
        grant_id: Option<&str>,
        actor: &str,
        event: Event,
        outcome: &str,
        details: Value,
    ) -> Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .ctx(|| format!("opening audit log {}", self.path.display()))?;
        rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("locking the audit log", e.into()))?;
        let (lines, prev) = self.settle(&file)?;
        let rec = Record {
            seq: lines + 1,
            time: crate::grant::rfc3339(std::time::SystemTime::now()),
            prev,
            operation_type: operation_type.to_string(),
            grant_id: grant_id.map(str::to_string),
            actor: actor.to_string(),
            event,
            outcome: outcome.to_string(),
            details,
        };
        let line = serde_json::to_string(&rec).map_err(|e| Error::invalid(e.to_string()))?;
        file.write_all(format!("{line}\n").as_bytes())
            .and_then(|_| file.sync_data())
            .ctx(|| "appending to the audit log")?;
        let bytes = file.metadata().ctx(|| "reading the audit log")?.len();
        self.write_head(lines + 1, line_hash(&line), bytes)
    }

    fn write_head(&self, lines: u64, hash: String, bytes: u64) -> Result<()> {
        let head = serde_json::to_vec(&Head {
            lines,
            hash,
            bytes: Some(bytes),
        })
        .map_err(|e| Error::invalid(e.to_string()))?;
        crate::state::write_atomic(&self.head, &head)
    }

    /// The count and hash of the last line, squaring the head with the log
    /// first: a writer killed between its line and its head update leaves
    /// whole lines past the head (adopted when they chain on) or a torn
    /// last line (cut, as it was never acknowledged). A log shorter than
    /// its head was cut, and is refused.
    fn settle(&self, file: &File) -> Result<(u64, String)> {
        let (lines, hash) = self.tail()?;
        let Ok(h) = std::fs::read(&self.head) else {
            return Ok((lines, hash));
        };
        let Some(at) = serde_json::from_slice::<Head>(&h)
            .ok()
            .and_then(|h| h.bytes)
        else {
            return Ok((lines, hash));
        };
        let len = file.metadata().ctx(|| "reading the audit log")?.len();
        if len == at {
            return Ok((lines, hash));
        }
        if len < at {
            return Err(Error::policy(format!(
                "the audit log is {len} bytes but its head records {at}: lines were cut from the end; refusing to append"
            )));
        }
        use std::io::{Read, Seek};
        let mut rest = Vec::new();
        let mut f = file.try_clone().ctx(|| "reading the audit log")?;
        f.seek(std::io::SeekFrom::Start(at))
            .and_then(|_| f.read_to_end(&mut rest))
            .ctx(|| "reading the audit log")?;
        let whole = rest.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let (mut lines, mut hash) = (lines, hash);
        for line in String::from_utf8_lossy(&rest[..whole]).lines() {
            let rec: Record = serde_json::from_str(line).map_err(|e| {
                Error::policy(format!(
                    "audit log line {} is not a record ({e}); refusing to append",
                    lines + 1
                ))
            })?;
            if rec.prev != hash || rec.seq != lines + 1 {
                return Err(Error::policy(format!(
                    "audit log line {} does not follow its head; refusing to append",
                    lines + 1
                )));
            }
            lines += 1;
            hash = line_hash(line);
        }
        if whole < rest.len() {
            file.set_len(at + whole as u64)
                .ctx(|| "cutting a torn last line from the audit log")?;
        }
        self.write_head(lines, hash.clone(), at + whole as u64)?;
        Ok((lines, hash))
    }

    /// The count and hash of the last line, from the head file (or the log
    /// itself when there is no head yet).
    fn tail(&self) -> Result<(u64, String)> {
        match std::fs::read(&self.head) {
            Ok(h) => {
                let head: Head = serde_json::from_slice(&h)
                    .map_err(|e| Error::invalid(format!("audit head is damaged: {e}")))?;
                Ok((head.lines, head.hash))
            }
            Err(_) => {
                let lines = self.lines()?;
                Ok(match lines.last() {
                    Some(l) => (lines.len() as u64, line_hash(l)),
                    None => (0, GENESIS.to_string()),
                })
            }
        }
    }

    fn lines(&self) -> Result<Vec<String>> {
        match File::open(&self.path) {
            Ok(f) => BufReader::new(f)
                .lines()
                .collect::<std::io::Result<_>>()
                .ctx(|| format!("reading {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(format!("reading {}", self.path.display()), e)),
        }
    }

    /// Every record, optionally of one grant.
    pub fn records(&self, grant: Option<&str>) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for (i, line) in self.lines()?.iter().enumerate() {
            let rec: Record = serde_json::from_str(line).map_err(|e| {
                Error::invalid(format!("audit log line {} is not a record: {e}", i + 1))
            })?;
            if grant.is_none() || rec.grant_id.as_deref() == grant {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Checks the chain. The error names the first line at fault.
    pub fn verify(&self) -> Result<u64> {
        let lines = self.lines()?;
        let mut prev = GENESIS.to_string();
        for (i, line) in lines.iter().enumerate() {
            let n = i + 1;
            let rec: Record = serde_json::from_str(line).map_err(|e| {
                Error::policy(format!(
                    "audit log line {n} has been altered: it is not a record ({e})"
                ))
            })?;
            if rec.prev != prev {
                return Err(Error::policy(format!(
                    "audit log line {n} does not follow line {}: a line was edited, removed or reordered at or before line {n}",
                    n - 1
                )));
            }
            if rec.seq != n as u64 {
                return Err(Error::policy(format!(
                    "audit log line {n} carries sequence number {}: lines were removed or reordered",
                    rec.seq
                )));
            }
            prev = line_hash(line);
        }
        if let Ok(h) = std::fs::read(&self.head) {
            let head: Head = serde_json::from_slice(&h)
                .map_err(|e| Error::policy(format!("audit head is damaged: {e}")))?;
            // Whole lines past the head are a writer killed before its
            // head update; they chain on, so they were verified above.
            let at_head = usize::try_from(head.lines)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| lines.get(i))
                .map(|l| line_hash(l));
            let matches = if head.lines == 0 {
                head.hash == GENESIS
            } else {
                at_head.as_deref() == Some(head.hash.as_str())
            };
            if head.lines > lines.len() as u64 || !matches {
                return Err(Error::policy(format!(
                    "audit log ends at line {} but its head records {} lines: lines were cut from the end or the last line was edited",
                    lines.len(),
                    head.lines
                )));
            }
        }
        Ok(lines.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log3() -> (tempfile::TempDir, Audit) {
        let d = tempfile::tempdir().unwrap();
        let a = Audit::new(d.path());
        for (i, ev) in [Event::Start, Event::Progress, Event::Complete]
            .into_iter()
            .enumerate()
        {
            a.append(
                "wopfs.patch.commit",
                Some("g-1"),
                "tester",
                ev,
                "ok",
                serde_json::json!({"n": i}),
            )
            .unwrap();
        }
        (d, a)
    }

    fn rewrite(a: &Audit, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines = a.lines().unwrap();
        f(&mut lines);
        std::fs::write(&a.path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_d, a) = log3();
        assert_eq!(a.verify().unwrap(), 3);
        assert_eq!(a.records(Some("g-1")).unwrap().len(), 3);
        assert_eq!(a.records(Some("g-2")).unwrap().len(), 0);
    }

    #[test]
    fn edits_removals_reorders_and_cuts_are_named() {
        let (_d, a) = log3();
        rewrite(&a, |l| l[1] = l[1].replace("\"ok\"", "\"fine\""));
        let e = a.verify().unwrap_err().to_string();
        assert!(e.contains("line 3"), "edit: {e}");

        let (_d, a) = log3();
        rewrite(&a, |l| {
            l.remove(1);
        });
        let e = a.verify().unwrap_err().to_string();
        assert!(e.contains("line 2"), "removal: {e}");

        let (_d, a) = log3();
        rewrite(&a, |l| l.swap(0, 1));
        let e = a.verify().unwrap_err().to_string();
        assert!(e.contains("line 1"), "reorder: {e}");

        let (_d, a) = log3();
        rewrite(&a, |l| {
            l.pop();
        });
        let e = a.verify().unwrap_err().to_string();
        assert!(e.contains("cut from the end"), "cut: {e}");

        let (_d, a) = log3();
        rewrite(&a, |l| l[0] = "not json".into());
        let e = a.verify().unwrap_err().to_string();
        assert!(e.contains("line 1"), "garbage: {e}");
    }

    /// A writer killed between its line and its head update: the next
    /// append adopts the line, or cuts a torn one, and the chain verifies.
    #[test]
    fn a_writer_killed_before_its_head_update_leaves_a_chain_that_verifies() {
        let (_d, a) = log3();
        let old_head = std::fs::read(&a.head).unwrap();
        a.append("t", None, "x", Event::Start, "ok", Value::Null)
            .unwrap();
        std::fs::write(&a.head, &old_head).unwrap(); // the head update "lost"
        assert_eq!(a.verify().unwrap(), 4);
        a.append("t", None, "x", Event::Complete, "ok", Value::Null)
            .unwrap();
        assert_eq!(a.verify().unwrap(), 5);

        // A torn line (no newline) is cut at the next append.
        let old_head = std::fs::read(&a.head).unwrap();
        let mut f = OpenOptions::new().append(true).open(&a.path).unwrap();
        f.write_all(b"{\"seq\": 6, \"tor").unwrap();
        drop(f);
        std::fs::write(&a.head, &old_head).unwrap();
        a.append("t", None, "x", Event::Complete, "ok", Value::Null)
            .unwrap();
        assert_eq!(a.verify().unwrap(), 6);

        // A log shorter than its head was cut: no append, and verify names it.
        rewrite(&a, |l| {
            l.pop();
        });
        let e = a
            .append("t", None, "x", Event::Complete, "ok", Value::Null)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut from the end"), "{e}");
        assert!(a
            .verify()
            .unwrap_err()
            .to_string()
            .contains("cut from the end"));
    }
}
