//! A request that fails for a reason the agent cannot see answers a bare
//! errno; the daemon log keeps why. Damage to the state dir (an overlay
//! object removed behind the view's back) is EIO, logged at warn with the
//! request and its cause.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_eio_leaves_its_cause_in_the_daemon_log_at_warn() {
    let env = Env::new();
    env.write("a.txt", "alpha\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mp");
    let m = env.mount(&g, &mp, &[]);
    fs::write(m.path("new.txt"), "hello").unwrap();

    let session = env.state.join("sessions").join(&g);
    let objects = files_under(&session.join("overlay/objects"));
    assert_eq!(objects.len(), 1, "{objects:?}");
    fs::remove_file(&objects[0]).unwrap();

    let err = fs::File::open(m.path("new.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");

    let log = session.join("daemon.log");
    let logged = || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("is missing"))
            .map(str::to_string)
    };
    wait_until("the failure is logged", Duration::from_secs(10), || {
        logged().is_some()
    });
    let line = logged().unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("op=\"open\""), "{line}");
    let obj = objects[0].file_name().unwrap().to_str().unwrap();
    assert!(
        line.contains(&format!(
            "overlay object {obj} is missing: No such file or directory"
        )),
        "{line}"
    );
    // An expected answer (a name that is not there) leaves nothing at the
    // daemon's default level.
    assert!(fs::metadata(m.path("absent.txt")).is_err());
    let text = fs::read_to_string(&log).unwrap();
    assert!(!text.contains("absent.txt"), "{text}");
}
