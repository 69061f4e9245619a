//! Real container engines over a view, by the README's recipes run as
//! written: docker, podman as root and rootless podman. A container as
//! uid 1000 reads, writes inside the write prefix (into the overlay, the
//! host untouched), is refused outside it (EACCES; EROFS in a read-only
//! view), never sees the secret `.env` (ENOENT), and the change is
//! committed afterwards.
//!
//! The image is made locally (no registry is reachable) by
//! `scripts/test-image.sh` from Debian's busybox-static. A test skips, and
//! says why on stderr, only when its engine is not there (not installed,
//! its daemon does not answer, or no image can be made); with
//! `WOPFS_TEST_DOCKER=1` / `WOPFS_TEST_PODMAN=1` (set by `.ci/run`, which
//! installs both and starts dockerd) it fails instead.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

const IMAGE: &str = "wopfs-test-busybox";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-image.sh");
/// Bound on any one engine command (a container run is about a second).
const LIMIT: Duration = Duration::from_secs(120);

/// `Some(())` when the engine can run; otherwise says why and returns
/// `None` (skip), or panics when `required_var` is `1` (CI said it is there).
fn ready(engine: &str, required_var: &str, check: &Result<(), String>) -> Option<()> {
    match check {
        Ok(()) => Some(()),
        Err(why) if std::env::var(required_var).is_ok_and(|v| v == "1") => {
            panic!("{required_var}=1 but {engine} cannot run the tests: {why}")
        }
        Err(why) => {
            say(&format!(
                "SKIPPED ({engine} unavailable, set {required_var}=1 to fail instead): {why}"
            ));
            None
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string()
}

/// Runs a probe command: its output, or why it could not run.
fn probe(cmd: &mut Command) -> Result<Output, String> {
    match try_output_within(cmd, LIMIT) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(format!("{cmd:?} did not answer within {LIMIT:?}")),
        Err(e) => Err(format!("{:?} cannot run: {e}", cmd.get_program())),
    }
}

/// Docker answers and has the image (built once per test process when it
/// is missing).
fn docker() -> Option<()> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        let info = probe(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]))?;
        if !info.status.success() {
            return Err(format!(
                "the docker daemon does not answer: {}",
                text(&info)
            ));
        }
        let have = probe(Command::new("docker").args(["image", "inspect", IMAGE]))?;
        if !have.status.success() {
            let built = probe(Command::new(SCRIPT).arg("docker").arg(IMAGE))?;
            if !built.status.success() {
                return Err(format!("no test image: {}", text(&built)));
            }
        }
        Ok(())
    });
    ready("docker", "WOPFS_TEST_DOCKER", check)
}

/// Removes every container of `engine` (with its environment) whose bind
/// source is `mp` (docker, one shared daemon), or every container at all
/// (podman, whose storage is the test's own); runs last (declared after
/// the mount guard, dropped before it).
struct Containers {
    cmd: Box<dyn Fn() -> Command>,
    filter: Option<String>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        let mut ps = (self.cmd)();
        ps.args(["ps", "-aq"]);
        if let Some(f) = &self.filter {
            ps.args(["--filter", f]);
        }
        let Ok(Some(out)) = try_output_within(&mut ps, LIMIT) else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            eprintln!("removing leftover containers {ids:?}");
            let _ = try_output_within((self.cmd)().args(["rm", "-f"]).args(&ids), LIMIT);
        }
    }
}

fn docker_containers(mp: &Path) -> Containers {
    Containers {
        cmd: Box::new(|| Command::new("docker")),
        filter: Some(format!("volume={}", mp.display())),
    }
}

/// What a committed agent run leaves on the host: its edit and new file
/// inside `src`, nothing else changed. The new file is the committing
/// user's (root here), not the container's, as the README's ownership
/// rule says.
fn check_committed(env: &Env) {
    assert_eq!(
        fs::read_to_string(env.host.join("src/a.py")).unwrap(),
        "a = 1\nmore\n"
    );
    assert_eq!(
        fs::read_to_string(env.host.join("src/new.py")).unwrap(),
        "new\n"
    );
    assert_eq!(fs::metadata(env.host.join("src/new.py")).unwrap().uid(), 0);
    assert_eq!(
        fs::read_to_string(env.host.join("README.md")).unwrap(),
        "# project\n"
    );
    assert_eq!(
        fs::read_to_string(env.host.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    assert_eq!(
        list_tree(&env.host),
        [
            ".env",
            "README.md",
            "agent",
            "src",
            "src/a.py",
            "src/new.py"
        ]
    );
}

/// A writable view's pending changes after the agent: exactly its two.
fn check_pending(env: &Env, g: &str) {
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", g, "--json"])).unwrap();
    let pending: Vec<(&str, &str)> = st[0]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["op"].as_str().unwrap()))
        .collect();
    assert_eq!(pending, [("src/a.py", "update"), ("src/new.py", "create")]);
}

/// The README's docker recipe, as written: a container as uid 1000 over a
/// writable view, then `wopfs commit`.
#[test]
fn the_readme_docker_recipe_runs_as_uid_1000_and_its_change_commits() {
    if docker().is_none() {
        return;
    }
    let env = Env::new();
    agent_project(&env);
    let before = tree_digest(&env.host);
    let g = env.grant(&["--mode", "read_write_overlay", "--write-prefix", "src"]);
    let recipe = readme_recipe("docker");
    assert_eq!(recipe.len(), 2, "{recipe:?}");
    assert!(recipe[1].starts_with("docker run --rm "), "{recipe:?}");
    let mp = env.mountpoint("agent");
    let m = env.mount_by_recipe(&recipe[0], &g, &mp);
    let _containers = docker_containers(&m.mp);
    let out = output_within(
        &mut recipe_command(&env, &recipe[1], &m.mp, &[("IMAGE", IMAGE)], None),
        LIMIT,
    );
    let report = agent_report(&out);
    assert_eq!(report["id"], "1000:1000", "{report:?}");
    check_agent(&report, None, outside_errno(&env, &g));
    // In the overlay, seen from the host side of the mount; the host tree
    // itself is untouched.
    assert_eq!(fs::read_to_string(m.path("src/new.py")).unwrap(), "new\n");
    assert_eq!(fs::metadata(m.path("src/new.py")).unwrap().uid(), 1000);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
    drop(_containers);
    drop(m);
    check_pending(&env, &g);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
    env.ok(&["commit", &g, "--yes"]);
    check_committed(&env);
}

/// The same recipe over a read-only view: every change answers EROFS.
#[test]
fn the_readme_docker_recipe_over_a_read_only_view_is_refused_with_erofs() {
    if docker().is_none() {
        return;
    }
    let env = Env::new();
    agent_project(&env);
    let before = tree_digest(&env.host);
    let g = env.grant(&[]);
    let recipe = readme_recipe("docker");
    let mp = env.mountpoint("agent");
    let m = env.mount_by_recipe(&recipe[0], &g, &mp);
    let _containers = docker_containers(&m.mp);
    let out = output_within(
        &mut recipe_command(&env, &recipe[1], &m.mp, &[("IMAGE", IMAGE)], None),
        LIMIT,
    );
    let report = agent_report(&out);
    assert_eq!(report["id"], "1000:1000", "{report:?}");
    check_agent(&report, Some(libc::EROFS), libc::EROFS);
    drop(_containers);
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
}

/// Podman with storage, configuration and run directory of its own under a
/// temp dir (nothing shared with the machine's podman), as root or as `uid`.
struct Podman {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    uid: Option<u32>,
}

impl Podman {
    fn new(uid: Option<u32>) -> Podman {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.join("home/.config/containers");
        fs::create_dir_all(&conf).unwrap();
        fs::create_dir_all(dir.join("run")).unwrap();
        // vfs: the layers are plain copies, no mount outlives a test.
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/runroot\"\n",
            dir.display()
        );
        fs::write(conf.join("storage.conf"), &storage).unwrap();
        fs::write(dir.join("storage.conf"), &storage).unwrap();
        // Podman as root raises the container's nofile and nproc limits to
        // its own defaults (1048576, 4194304), which needs CAP_SYS_RESOURCE;
        // where root lacks it (some sandboxes, this CI machine) it asks for
        // limits that need no raise instead.
        let mut containers = format!("[engine]\ntmp_dir = \"{}/tmp\"\n", dir.display());
        if !has_cap_sys_resource() {
            containers.push_str(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n",
            );
        }
        fs::write(dir.join("containers.conf"), containers).unwrap();
        if let Some(uid) = uid {
            Command::new("chown")
                .args(["-R", &format!("{uid}:{uid}")])
                .arg(&dir)
                .status()
                .unwrap();
            fs::set_permissions(dir.join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        }
        Podman {
            dir,
            _tmp: tmp,
            uid,
        }
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        podman_vars(&self.dir, self.uid)
    }

    /// Builds the image into this storage.
    fn image(&self) -> Result<(), String> {
        let mut c = as_user(SCRIPT, self.uid);
        c.args(["podman", IMAGE]);
        with_podman_vars(&mut c, &self.dir, self.uid);
        let out = probe(&mut c)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("no test image: {}", text(&out)))
        }
    }

    fn containers(&self) -> Containers {
        let (dir, uid) = (self.dir.clone(), self.uid);
        Containers {
            cmd: Box::new(move || {
                let mut c = as_user("podman", uid);
                with_podman_vars(&mut c, &dir, uid);
                c
            }),
            filter: None,
        }
    }

    /// Ends rootless podman's pause process, which holds its namespaces
    /// (and with them a copy of the view's mount).
    fn end_pause(&self) {
        let pidfile = self.dir.join("run/libpod/tmp/pause.pid");
        if let Some(pid) = fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.end_pause();
    }
}

/// `program`, through setpriv for a uid.
fn as_user(program: &str, uid: Option<u32>) -> Command {
    match uid {
        None => Command::new(program),
        Some(uid) => {
            let id = uid.to_string();
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &id, "--regid", &id, "--clear-groups", program]);
            c
        }
    }
}

/// The environment podman runs with: its own home, run directory, storage
/// and (as root) configuration, under `dir`.
fn podman_vars(dir: &Path, uid: Option<u32>) -> Vec<(&'static str, String)> {
    let d = dir.display();
    let mut v = vec![
        ("HOME", format!("{d}/home")),
        ("XDG_RUNTIME_DIR", format!("{d}/run")),
    ];
    if uid.is_none() {
        v.push(("CONTAINERS_STORAGE_CONF", format!("{d}/storage.conf")));
        v.push(("CONTAINERS_CONF", format!("{d}/containers.conf")));
    }
    v
}

fn with_podman_vars(c: &mut Command, dir: &Path, uid: Option<u32>) {
    c.env_remove("CONTAINERS_CONF")
        .env_remove("CONTAINERS_STORAGE_CONF");
    for (k, v) in podman_vars(dir, uid) {
        c.env(k, v);
    }
}

fn has_cap_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_RESOURCE: u32 = 24;
    eff & (1 << CAP_SYS_RESOURCE) != 0
}

/// Podman is installed and can make the image (podman needs no daemon).
fn podman(p: &Podman) -> Option<()> {
    let check = probe(Command::new("podman").arg("--version"))
        .and_then(|out| {
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("podman --version: {}", text(&out)))
            }
        })
        .and_then(|()| p.image());
    ready("podman", "WOPFS_TEST_PODMAN", &check)
}

/// The README's "podman as root" recipe, as written: the same flags as
/// docker, a container as uid 1000, then `wopfs commit`.
#[test]
fn the_readme_podman_recipe_as_root_runs_as_uid_1000_and_its_change_commits() {
    let p = Podman::new(None);
    if podman(&p).is_none() {
        return;
    }
    let env = Env::new();
    agent_project(&env);
    let before = tree_digest(&env.host);
    let g = env.grant(&["--mode", "read_write_overlay", "--write-prefix", "src"]);
    let recipe = readme_recipe("podman as root");
    assert_eq!(recipe.len(), 2, "{recipe:?}");
    assert!(recipe[1].starts_with("podman run --rm "), "{recipe:?}");
    let mp = env.mountpoint("agent");
    let m = env.mount_by_recipe(&recipe[0], &g, &mp);
    let _containers = p.containers();
    let mut vars: Vec<(&str, String)> = p.vars();
    vars.push(("IMAGE", IMAGE.to_string()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = output_within(
        &mut recipe_command(&env, &recipe[1], &m.mp, &vars, None),
        LIMIT,
    );
    let report = agent_report(&out);
    assert_eq!(report["id"], "1000:1000", "{report:?}");
    check_agent(&report, None, outside_errno(&env, &g));
    assert_eq!(fs::metadata(m.path("src/new.py")).unwrap().uid(), 1000);
    drop(_containers);
    drop(m);
    check_pending(&env, &g);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
    env.ok(&["commit", &g, "--yes"]);
    check_committed(&env);
}

/// A bind mount made shared (`mount --bind D D; mount --make-shared D`),
/// undone on drop: views mounted under it later reach namespaces copied
/// from it before (rootless podman's pause process).
struct SharedParent(PathBuf);

impl SharedParent {
    fn new(dir: PathBuf) -> SharedParent {
        let d = dir.to_str().unwrap();
        for args in [vec!["--bind", d, d], vec!["--make-shared", d]] {
            let st = Command::new("mount").args(&args).status().unwrap();
            assert!(st.success(), "mount {args:?}");
        }
        SharedParent(dir)
    }
}

impl Drop for SharedParent {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// The README's rootless podman recipe: root mounts the view for uid 1000,
/// uid 1000 runs podman (its container's root is uid 1000 outside). Podman
/// starts its pause process (importing the image) before the view exists,
/// as a user's podman usually has; the view reaches it through a shared
/// parent, as the README says.
#[test]
fn the_readme_rootless_podman_recipe_runs_as_uid_1000_and_its_change_commits() {
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let views = env.mountpoint("views");
    let _shared = SharedParent::new(views.clone());
    let p = Podman::new(Some(1000));
    if podman(&p).is_none() {
        return;
    }
    agent_project(&env);
    let before = tree_digest(&env.host);
    let g = env.grant(&["--mode", "read_write_overlay", "--write-prefix", "src"]);
    let recipe = readme_recipe("rootless podman");
    assert_eq!(recipe.len(), 2, "{recipe:?}");
    assert!(recipe[1].starts_with("podman run --rm "), "{recipe:?}");
    let mp = views.join("agent");
    fs::create_dir_all(&mp).unwrap();
    let m = env.mount_by_recipe(&recipe[0], &g, &mp);
    let _containers = p.containers();
    let mut vars: Vec<(&str, String)> = p.vars();
    vars.push(("IMAGE", IMAGE.to_string()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = output_within(
        &mut recipe_command(&env, &recipe[1], &m.mp, &vars, Some(1000)),
        LIMIT,
    );
    let report = agent_report(&out);
    assert_eq!(report["id"], "0:0", "{report:?}");
    check_agent(&report, None, outside_errno(&env, &g));
    assert_eq!(fs::metadata(m.path("src/new.py")).unwrap().uid(), 1000);
    drop(_containers);
    p.end_pause();
    drop(m);
    check_pending(&env, &g);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
    env.ok(&["commit", &g, "--yes"]);
    check_committed(&env);
}
