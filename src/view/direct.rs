//! `read_write_direct` views: writes go to the host files themselves,
//! under the same visibility and scope rules as the overlay, and every
//! change is recorded in the session's event log
//! (`STATE/sessions/g-…/events.jsonl`, one JSON object a line).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::{IoContext, Result};

pub struct DirectLog {
    file: Mutex<File>,
}

#[derive(Serialize)]
struct Event<'a> {
    time: String,
    op: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
}

impl DirectLog {
    pub fn open(session_dir: &Path) -> Result<DirectLog> {
        let path = session_dir.join("events.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        Ok(DirectLog {
            file: Mutex::new(file),
        })
    }

    /// Records one change; a failure to log is reported, never hidden.
    pub fn log(
        &self,
        op: &str,
        path: &str,
        to: Option<&str>,
        bytes: Option<u64>,
    ) -> std::io::Result<()> {
        let ev = Event {
            time: crate::grant::rfc3339(std::time::SystemTime::now()),
            op,
            path,
            to,
            bytes,
        };
        let mut line = serde_json::to_vec(&ev).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&line)
    }
}
