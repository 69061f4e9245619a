//! `read_write_direct`: allowed only by a policy that says so; writes reach
//! the host files under the same visibility and scope rules, and each
//! change is recorded in the session's event log.

mod common;

use std::fs;

use common::*;

fn direct_policy(env: &Env) -> String {
    let p = env.dir.path().join("direct.toml");
    fs::write(
        &p,
        "enabled = true\nmax_files = 1000\nmax_total_size_bytes = 100000000\n\
         allowed_modes = [\"read_only\", \"read_write_direct\"]\nrequire_reason = false\n\
         deny_patterns = [\"**/.env\", \"**/.git\"]\n",
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

fn events(env: &Env, g: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(env.state.join("sessions").join(g).join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn default_policy_refuses_direct_mode() {
    let env = Env::new();
    env.write("a.txt", "a");
    let e = env.fails(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--mode",
        "read_write_direct",
    ]);
    assert!(e.contains("mode read_write_direct is not allowed"), "{e}");
}

#[test]
fn direct_writes_reach_the_host_and_are_logged() {
    let env = Env::new();
    env.write("src/a.py", "a = 1\n");
    env.write("src/b.py", "b = 2\n");
    env.write("src/.env", "SECRET=1\n");
    env.write("docs/x.md", "x\n");
    let policy = direct_policy(&env);
    let g = env.grant(&[
        "--policy",
        &policy,
        "--mode",
        "read_write_direct",
        "--write-prefix",
        "src",
    ]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);

    fs::write(m.path("src/a.py"), "a = 10\n").unwrap();
    assert_eq!(
        fs::read_to_string(env.host.join("src/a.py")).unwrap(),
        "a = 10\n"
    );
    fs::write(m.path("src/new.py"), "new\n").unwrap();
    assert_eq!(
        fs::read_to_string(env.host.join("src/new.py")).unwrap(),
        "new\n"
    );
    fs::create_dir(m.path("src/pkg")).unwrap();
    assert!(env.host.join("src/pkg").is_dir());
    fs::rename(m.path("src/b.py"), m.path("src/pkg/b.py")).unwrap();
    assert!(env.host.join("src/pkg/b.py").is_file() && !env.host.join("src/b.py").exists());
    fs::remove_file(m.path("src/pkg/b.py")).unwrap();
    assert!(!env.host.join("src/pkg/b.py").exists());
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.path("src/a.py"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(env.host.join("src/a.py"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Same visibility and scope rules as the overlay.
    assert_eq!(errno(fs::metadata(m.path("src/.env"))), libc::ENOENT);
    assert_eq!(errno(fs::write(m.path("src/.env"), "x")), libc::EACCES);
    assert_eq!(
        fs::read_to_string(env.host.join("src/.env")).unwrap(),
        "SECRET=1\n"
    );
    assert_eq!(
        errno(fs::write(m.path("docs/new.md"), "x")),
        libc::EACCES,
        "outside the write prefix"
    );
    assert!(!env.host.join("docs/new.md").exists());
    drop(m);

    let ev = events(&env, &g);
    let has = |op: &str, path: &str| ev.iter().any(|e| e["op"] == op && e["path"] == path);
    assert!(has("open_write", "src/a.py"), "{ev:?}");
    assert!(has("write", "src/a.py"), "{ev:?}");
    assert!(has("create", "src/new.py"), "{ev:?}");
    assert!(has("mkdir", "src/pkg"), "{ev:?}");
    assert!(ev
        .iter()
        .any(|e| e["op"] == "rename" && e["path"] == "src/b.py" && e["to"] == "src/pkg/b.py"));
    assert!(has("unlink", "src/pkg/b.py"), "{ev:?}");
    assert!(has("chmod", "src/a.py"), "{ev:?}");
    let bytes: u64 = ev
        .iter()
        .filter(|e| e["op"] == "write" && e["path"] == "src/a.py")
        .map(|e| e["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(bytes, 7);
    assert!(ev
        .iter()
        .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))));
}
