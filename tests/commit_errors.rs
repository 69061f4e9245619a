//! Every way a commit must refuse, really mounted and run through the CLI:
//! a live mount, malformed, truncated or forged patch sets, paths outside
//! the root or the grant, contents that do not match their hashes, a set
//! for another grant, a parent directory swapped for a symlink, ended
//! sessions, host conflicts, missing human approval. Each refusal is one
//! `wopfs: ` line naming the fault, and the host tree is left exactly as
//! it was (paths, modes, mtimes, contents). Also: `--path` partial commits
//! around a conflict, `reject`, and the audit log's hash chain.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use common::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

const MAIN_OLD: &str = "int main(void) { return 0; }\n";
const MAIN_NEW: &str = "int main(void) { return 1; }\n";

fn hash(data: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(data).to_hex())
}

fn big() -> Vec<u8> {
    (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect()
}

fn host_tree(env: &Env) {
    env.write("README.md", "# project\n");
    env.write("src/main.c", MAIN_OLD);
    env.write("src/lib.c", "int lib;\n");
    env.write("docs/guide.md", "guide\n");
    env.write(".env", "SECRET=1\n");
}

/// The session every test starts from, already unmounted: two updates
/// (README.md, src/main.c), three creates (assets/big.bin above the inline
/// limit, gen/out.c in a new directory, src/new.c) and one delete
/// (docs/guide.md). Sorted by path, that is also the set's order.
fn edit(env: &Env, g: &str) {
    let m = env.mount(g, &env.mountpoint("mnt"), &[]);
    fs::write(m.path("README.md"), "# edited\n").unwrap();
    fs::write(m.path("src/main.c"), MAIN_NEW).unwrap();
    fs::write(m.path("src/new.c"), "int new;\n").unwrap();
    fs::create_dir_all(m.path("assets")).unwrap();
    fs::write(m.path("assets/big.bin"), big()).unwrap();
    fs::create_dir_all(m.path("gen")).unwrap();
    fs::write(m.path("gen/out.c"), "out\n").unwrap();
    fs::remove_file(m.path("docs/guide.md")).unwrap();
    drop(m);
}

const ALL: [&str; 6] = [
    "README.md",
    "assets/big.bin",
    "docs/guide.md",
    "gen/out.c",
    "src/main.c",
    "src/new.c",
];

fn session() -> (Env, String) {
    let env = Env::new();
    host_tree(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    edit(&env, &g);
    (env, g)
}

/// The host holds every change of the session.
fn assert_committed(env: &Env) {
    let read = |p: &str| fs::read_to_string(env.host.join(p)).unwrap();
    assert_eq!(read("README.md"), "# edited\n");
    assert_eq!(read("src/main.c"), MAIN_NEW);
    assert_eq!(read("src/new.c"), "int new;\n");
    assert_eq!(read("gen/out.c"), "out\n");
    assert_eq!(fs::read(env.host.join("assets/big.bin")).unwrap(), big());
    assert!(!env.host.join("docs/guide.md").exists());
    assert_eq!(read("src/lib.c"), "int lib;\n");
    assert_eq!(read(".env"), "SECRET=1\n");
    assert!(
        !list_tree(&env.host).iter().any(|p| p.contains(".wopfs-")),
        "commit scratch left behind: {:?}",
        list_tree(&env.host)
    );
}

fn pending(env: &Env, g: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&env.ok(&["status", g, "--json"])).unwrap();
    let mut out: Vec<String> = v[0]["pending"]
        .as_array()
        .unwrap_or_else(|| panic!("no pending list: {v}"))
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// `wopfs export G -o DIR` (`--inline` when asked); returns DIR and the set.
fn export(env: &Env, g: &str, name: &str, inline: bool) -> (PathBuf, Value) {
    let dir = env.dir.path().join(name);
    let d = dir.to_str().unwrap();
    if inline {
        env.ok(&["export", g, "-o", d, "--inline"]);
    } else {
        env.ok(&["export", g, "-o", d]);
    }
    let set = serde_json::from_slice(&fs::read(dir.join("patchset.json")).unwrap()).unwrap();
    (dir, set)
}

/// Writes `text` as the `patchset.json` of a fresh directory `name`.
fn set_text(env: &Env, name: &str, text: &[u8]) -> PathBuf {
    let dir = env.dir.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("patchset.json"), text).unwrap();
    dir
}

/// A copy of `set` changed by `f`, written as the patch set `name`.
fn forged(env: &Env, set: &Value, name: &str, f: impl FnOnce(&mut Value)) -> PathBuf {
    let mut v = set.clone();
    f(&mut v);
    set_text(env, name, &serde_json::to_vec_pretty(&v).unwrap())
}

/// The patch of `path` in a set.
fn patch<'a>(set: &'a mut Value, path: &str) -> &'a mut Value {
    set["patches"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["path"] == path)
        .unwrap_or_else(|| panic!("no patch for {path}"))
}

/// Runs a command that must be refused: exit non-zero, one `wopfs: ` line
/// containing every `want`, and the host tree exactly as before. Returns
/// the error line.
fn refused(env: &Env, args: &[&str], wants: &[&str]) -> String {
    let before = tree_digest(&env.host);
    let err = env.fails(args);
    eprintln!("refused {args:?}: {}", err.trim_end());
    assert!(
        err.starts_with("wopfs: ") && err.trim_end().lines().count() == 1,
        "{args:?}: not one `wopfs: ` line: {err:?}"
    );
    for w in wants {
        assert!(err.contains(w), "{args:?}: {w:?} not in: {err}");
    }
    assert_eq!(
        tree_digest(&env.host),
        before,
        "{args:?} was refused but changed the host tree"
    );
    err
}

/// A change to a patch set, for tables of forgeries.
type Forge = Box<dyn FnOnce(&mut Value)>;

fn commit_from<'a>(g: &'a str, dir: &'a Path) -> Vec<&'a str> {
    vec!["commit", g, "--yes", "--from", dir.to_str().unwrap()]
}

#[test]
fn commit_while_mounted_is_refused_and_writes_nothing() {
    let env = Env::new();
    host_tree(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    fs::write(m.path("README.md"), "# edited\n").unwrap();
    fs::write(m.path("src/new.c"), "int new;\n").unwrap();
    let before = tree_digest(&env.host);
    let mps = mp.to_str().unwrap();
    for args in [
        vec!["commit", &g, "--yes"],
        vec!["commit", &g, "--yes", "--approver", "alice"],
        vec!["commit", &g, "--dry-run"],
        vec!["commit", &g, "--yes", "--path", "README.md"],
    ] {
        refused(&env, &args, &["mounted", "umount", mps]);
    }
    // An exported set is refused the same way while the view is live.
    let (dir, _) = export(&env, &g, "set", true);
    refused(&env, &commit_from(&g, &dir), &["mounted", "umount"]);
    refused(
        &env,
        &["reject", &g, "--reason", "no"],
        &["mounted", "umount"],
    );
    // The view still works and still holds the edits.
    assert_eq!(
        fs::read_to_string(m.path("README.md")).unwrap(),
        "# edited\n"
    );
    drop(m);
    assert!(!is_mounted(&mp));
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
    assert_eq!(pending(&env, &g), ["README.md", "src/new.c"]);
    // Unmounted, the same commit goes through.
    env.ok(&["commit", &g, "--yes"]);
    assert_eq!(
        fs::read_to_string(env.host.join("README.md")).unwrap(),
        "# edited\n"
    );
    assert_eq!(
        fs::read_to_string(env.host.join("src/new.c")).unwrap(),
        "int new;\n"
    );
}

/// A `wopfs run` command, told to finish by a file outside the view; it is
/// told (and waited for) even when the test fails.
struct Running {
    child: std::process::Child,
    go: PathBuf,
}

impl Running {
    fn finish(mut self) -> std::process::ExitStatus {
        fs::write(&self.go, "").unwrap();
        wait_child(&mut self.child, "wopfs run", Duration::from_secs(30))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = fs::write(&self.go, "");
        if !poll_until(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn commit_reject_and_recover_are_refused_while_run_serves_the_view() {
    let env = Env::new();
    host_tree(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let before = tree_digest(&env.host);
    let at = env.dir.path().join("ws");
    let ready = env.dir.path().join("ready");
    let go = env.dir.path().join("go");
    // The command edits the view, says so outside it, and waits to be told.
    let script = format!(
        "echo '# edited' > README.md && echo 'int new;' > src/new.c && : > '{}' && while [ ! -e '{}' ]; do sleep 0.05; done",
        ready.display(),
        go.display()
    );
    let child = wopfs_command()
        .args(["--state-dir", env.state.to_str().unwrap(), "run", &g])
        .args(["--at", at.to_str().unwrap(), "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let run = Running { child, go };
    wait_until(
        "the command to edit the view",
        Duration::from_secs(30),
        || ready.exists(),
    );
    for args in [
        vec!["commit", &g, "--yes"],
        vec!["commit", &g, "--yes", "--path", "README.md"],
        vec!["reject", &g, "--reason", "no"],
        vec!["recover", &g],
    ] {
        // The run is found first (commit, reject), else the lock; never
        // advice to unmount the run's own mountpoint.
        let err = refused(&env, &args, &[&g]);
        let want = match args[0] {
            "recover" => "is in use",
            _ => "is served by wopfs run",
        };
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("wopfs umount /"), "{err}");
    }
    let status = run.finish();
    assert!(status.success(), "wopfs run: {status}");
    assert!(no_mount_of_grant(&g));
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
    // Served no longer, recover (nothing to do) and the commit go through.
    assert_eq!(pending(&env, &g), ["README.md", "src/new.c"]);
    env.ok(&["recover", &g]);
    env.ok(&["commit", &g, "--yes"]);
    assert_eq!(
        fs::read_to_string(env.host.join("README.md")).unwrap(),
        "# edited\n"
    );
}

#[test]
fn malformed_or_truncated_sets_are_refused() {
    let (env, g) = session();
    let before = tree_digest(&env.host);
    let (good, set) = export(&env, &g, "set", true);
    let text = fs::read(good.join("patchset.json")).unwrap();

    let mut cases: Vec<(PathBuf, &str)> = vec![
        (set_text(&env, "half", &text[..text.len() / 2]), "malformed"),
        (set_text(&env, "cut", &text[..text.len() - 3]), "malformed"),
        (set_text(&env, "empty", b""), "malformed"),
        (set_text(&env, "garbage", b"not json at all"), "malformed"),
        (set_text(&env, "nul", b"\0\0\0\0"), "malformed"),
        (set_text(&env, "array", b"[]"), "malformed"),
    ];
    let forgeries: Vec<(&str, Forge, &str)> = vec![
        (
            "no-patches",
            Box::new(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("patches");
            }),
            "malformed",
        ),
        (
            "patches-object",
            Box::new(|v: &mut Value| v["patches"] = json!({})),
            "malformed",
        ),
        (
            "no-grant",
            Box::new(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("grant_id");
            }),
            "malformed",
        ),
        (
            "extra-field",
            Box::new(|v: &mut Value| v["approved"] = json!(true)),
            "malformed",
        ),
        (
            "patch-extra-field",
            Box::new(|v: &mut Value| patch(v, "src/new.c")["exec"] = json!("rm -rf /")),
            "malformed",
        ),
        (
            "patch-no-path",
            Box::new(|v: &mut Value| {
                patch(v, "src/new.c")
                    .as_object_mut()
                    .unwrap()
                    .remove("path");
            }),
            "malformed",
        ),
        (
            "size-string",
            Box::new(|v: &mut Value| patch(v, "src/new.c")["size"] = json!("big")),
            "malformed",
        ),
        (
            "mode-negative",
            Box::new(|v: &mut Value| patch(v, "src/new.c")["mode"] = json!(-1)),
            "malformed",
        ),
        (
            "path-number",
            Box::new(|v: &mut Value| patch(v, "src/new.c")["path"] = json!(7)),
            "malformed",
        ),
        (
            "format",
            Box::new(|v: &mut Value| v["format"] = json!("wopfs.patchset/2")),
            "has format",
        ),
        (
            "bad-base64",
            Box::new(|v: &mut Value| patch(v, "src/new.c")["content"] = json!("!!not base64!!")),
            "not valid base64",
        ),
    ];
    for (name, f, want) in forgeries {
        cases.push((forged(&env, &set, name, f), want));
    }
    for (dir, want) in &cases {
        let err = refused(&env, &commit_from(&g, dir), &[want]);
        if *want == "malformed" {
            assert!(err.contains("patchset.json"), "names the file: {err}");
        }
        // The file itself may be named as well as its directory.
        let file = dir.join("patchset.json");
        refused(
            &env,
            &["commit", &g, "--yes", "--from", file.to_str().unwrap()],
            &[want],
        );
    }
    // A directory without a patch set, and one that does not exist.
    let empty = env.dir.path().join("no-set");
    fs::create_dir_all(&empty).unwrap();
    refused(&env, &commit_from(&g, &empty), &["patchset.json"]);
    refused(
        &env,
        &commit_from(&g, &env.dir.path().join("nowhere")),
        &["nowhere"],
    );

    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
    assert_eq!(pending(&env, &g), ALL, "a refusal changed the session");
    // The untouched set still commits.
    env.ok(&commit_from(&g, &good));
    assert_committed(&env);
}

#[test]
fn unknown_operations_are_refused() {
    let (env, g) = session();
    let before = tree_digest(&env.host);
    let (_, set) = export(&env, &g, "set", true);
    for (n, (path, op)) in [
        ("docs/guide.md", json!("rename")),
        ("src/new.c", json!("chmod")),
        ("README.md", json!("UPDATE")),
        ("src/main.c", json!("")),
    ]
    .into_iter()
    .enumerate()
    {
        let name = op.as_str().unwrap().to_string();
        let dir = forged(&env, &set, &format!("op{n}"), |v| {
            patch(v, path)["operation"] = op
        });
        refused(
            &env,
            &commit_from(&g, &dir),
            &["unknown variant", &format!("`{name}`")],
        );
    }
    let dir = forged(&env, &set, "op-number", |v| {
        patch(v, "src/new.c")["operation"] = json!(1)
    });
    refused(&env, &commit_from(&g, &dir), &["malformed"]);
    assert_eq!(tree_digest(&env.host), before);
}

#[test]
fn invalid_paths_are_refused_and_nothing_outside_the_root_is_touched() {
    let (env, g) = session();
    let outside = env.dir.path().canonicalize().unwrap().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim.txt"), "victim\n").unwrap();
    let outside_before = tree_digest(&outside);
    let before = tree_digest(&env.host);
    let (_, set) = export(&env, &g, "set", true);
    let victim_abs = outside.join("victim.txt").to_str().unwrap().to_string();
    let victim_hash = hash(b"victim\n");

    let bad_paths = [
        ("/etc/passwd", "absolute"),
        (victim_abs.as_str(), "absolute"),
        ("../outside/victim.txt", "'..'"),
        ("src/../../outside/victim.txt", "'..'"),
        ("src/..", "'..'"),
        ("./src/new.c", "'.'"),
        ("src/./new.c", "'.'"),
        ("src//new.c", "empty segment"),
        ("src/new.c/", "empty segment"),
        ("", "empty"),
        ("src/ne\0w.c", "NUL"),
        ("\0", "NUL"),
    ];
    // Every operation: an update and a delete claim the victim's content as
    // their base, so only the path check stands between them and it.
    for (n, (bad, why)) in bad_paths.iter().enumerate() {
        for (k, (op_path, base)) in [
            ("src/new.c", None),
            ("README.md", Some(&victim_hash)),
            ("docs/guide.md", Some(&victim_hash)),
        ]
        .into_iter()
        .enumerate()
        {
            let dir = forged(&env, &set, &format!("path{n}-{k}"), |v| {
                let p = patch(v, op_path);
                p["path"] = json!(bad);
                if let Some(b) = base {
                    p["base"] = json!(b);
                }
            });
            refused(&env, &commit_from(&g, &dir), &["invalid path", why]);
            assert_eq!(tree_digest(&outside), outside_before, "{bad:?} escaped");
        }
    }
    assert_eq!(
        fs::read_to_string(outside.join("victim.txt")).unwrap(),
        "victim\n"
    );
    assert_eq!(list_tree(&outside), ["victim.txt"]);
    assert_eq!(tree_digest(&env.host), before);
}

#[test]
fn paths_outside_the_grant_are_refused() {
    let (env, g) = session();
    let before = tree_digest(&env.host);
    let (_, set) = export(&env, &g, "set", true);
    let env_hash = hash(b"SECRET=1\n");
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        // Creates where the policy denies new names.
        ("src/new.c", ".env.local", None),
        ("src/new.c", "keys/server.pem", None),
        ("src/new.c", "sub/.git/config", None),
        ("src/new.c", ".env", None),
        // An update or delete of a host file the grant withholds, with the
        // right base: only the grant check refuses it.
        ("README.md", ".env", Some(env_hash.as_str())),
        ("docs/guide.md", ".env", Some(env_hash.as_str())),
        // An update or delete of a path the grant never listed.
        ("README.md", "src/absent.c", Some(env_hash.as_str())),
        ("docs/guide.md", "src/absent.c", Some(env_hash.as_str())),
    ];
    for (n, (from, to, base)) in cases.into_iter().enumerate() {
        let dir = forged(&env, &set, &format!("out{n}"), |v| {
            let p = patch(v, from);
            p["path"] = json!(to);
            if let Some(b) = base {
                p["base"] = json!(b);
            }
        });
        let err = refused(&env, &commit_from(&g, &dir), &["outside grant", to, &g]);
        assert!(!err.contains("malformed"), "{err}");
    }
    assert_eq!(
        fs::read_to_string(env.host.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    assert_eq!(tree_digest(&env.host), before);

    // A narrower grant: only src/ is granted, new names only under src/gen.
    let g2 = env.grant(&[
        "--mode",
        "read_write_overlay",
        "--allow",
        "src/**",
        "--write-prefix",
        "src/gen",
    ]);
    let m = env.mount(&g2, &env.mountpoint("mnt2"), &[]);
    // Outside the write prefix the view refuses the edit itself...
    assert_eq!(
        fs::write(m.path("src/main.c"), MAIN_NEW)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EACCES)
    );
    fs::create_dir_all(m.path("src/gen")).unwrap();
    fs::write(m.path("src/gen/x.c"), "x\n").unwrap();
    drop(m);
    let before = tree_digest(&env.host);
    let (_, set2) = export(&env, &g2, "set2", true);
    // ...and a forged set doing it (or creating outside) is refused too.
    for (n, (to, op)) in [
        ("src/x.c", "create"),
        ("top.c", "create"),
        ("src/gen2/x.c", "create"),
        ("README.md", "update"),
        ("src/main.c", "update"),
        ("src/new.c", "update"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = forged(&env, &set2, &format!("narrow{n}"), |v| {
            let p = patch(v, "src/gen/x.c");
            p["path"] = json!(to);
            p["operation"] = json!(op);
            if op == "update" {
                p["base"] = json!(hash(
                    &fs::read(env.host.join(to)).unwrap_or_else(|_| b"x".to_vec())
                ));
            }
        });
        refused(&env, &commit_from(&g2, &dir), &["outside grant", to]);
    }
    assert_eq!(tree_digest(&env.host), before);
}

#[test]
fn contents_that_do_not_match_their_hash_are_refused() {
    let (env, g) = session();
    let before = tree_digest(&env.host);
    let (_, set) = export(&env, &g, "set", true);

    // A flipped byte in the last patch: every earlier patch is valid, and
    // still nothing may be written.
    let flip = |v: &mut Value, path: &str| {
        let p = patch(v, path);
        let mut data = B64.decode(p["content"].as_str().unwrap()).unwrap();
        data[0] ^= 1;
        p["content"] = json!(B64.encode(&data));
    };
    for path in ["src/new.c", "README.md", "assets/big.bin", "src/main.c"] {
        let dir = forged(
            &env,
            &set,
            &format!("flip-{}", path.replace('/', "-")),
            |v| flip(v, path),
        );
        refused(
            &env,
            &commit_from(&g, &dir),
            &["does not match its blob hash", path],
        );
    }
    // Content swapped for other content, the hash left alone.
    let dir = forged(&env, &set, "swap", |v| {
        patch(v, "src/new.c")["content"] = json!(B64.encode(b"system(\"evil\");\n"))
    });
    refused(
        &env,
        &commit_from(&g, &dir),
        &["does not match its blob hash", "src/new.c"],
    );
    // The hash changed to another valid-looking one.
    let dir = forged(&env, &set, "rehash", |v| {
        patch(v, "src/new.c")["blob"] = json!(hash(b"something else"))
    });
    refused(
        &env,
        &commit_from(&g, &dir),
        &["does not match its blob hash", "src/new.c"],
    );
    // A truncated content (a prefix of the real one).
    let dir = forged(&env, &set, "short", |v| {
        patch(v, "assets/big.bin")["content"] = json!(B64.encode(&big()[..50_000]))
    });
    refused(
        &env,
        &commit_from(&g, &dir),
        &["does not match its blob hash", "assets/big.bin"],
    );

    // Blobs on disk: assets/big.bin is above the inline limit.
    let (blobs, bset) = export(&env, &g, "blobs", false);
    let hex = bset["patches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "assets/big.bin")
        .unwrap()["blob"]
        .as_str()
        .unwrap()
        .strip_prefix("blake3:")
        .unwrap()
        .to_string();
    assert!(blobs.join("blobs").join(&hex).is_file(), "no blob file");
    assert!(
        bset.to_string().len() < 50_000,
        "the big content was inlined"
    );
    let blob = blobs.join("blobs").join(&hex);
    let mut data = fs::read(&blob).unwrap();
    data[99_999] ^= 0x80;
    fs::write(&blob, &data).unwrap();
    refused(
        &env,
        &commit_from(&g, &blobs),
        &["does not match its blob hash", "assets/big.bin"],
    );
    // The blob truncated, then missing.
    fs::write(&blob, &big()[..10]).unwrap();
    refused(
        &env,
        &commit_from(&g, &blobs),
        &["does not match its blob hash", "assets/big.bin"],
    );
    fs::remove_file(&blob).unwrap();
    refused(&env, &commit_from(&g, &blobs), &["assets/big.bin", &hex]);
    // A blob hash that is no hash (no path tricks through `blobs/`).
    fs::create_dir_all(env.dir.path().join("blobs2/blobs")).unwrap();
    let dir = forged(&env, &bset, "blobs2", |v| {
        patch(v, "assets/big.bin")["blob"] = json!("blake3:../../../etc/passwd")
    });
    refused(&env, &commit_from(&g, &dir), &["is not a blake3 hash"]);

    assert_eq!(tree_digest(&env.host), before);
    assert_eq!(pending(&env, &g), ALL);
    env.ok(&["commit", &g, "--yes"]);
    assert_committed(&env);
}

#[test]
fn structurally_wrong_patches_are_refused() {
    let (env, g) = session();
    let before = tree_digest(&env.host);
    let (_, set) = export(&env, &g, "set", true);
    let main_old = hash(MAIN_OLD.as_bytes());
    let cases: Vec<(&str, Forge, Vec<&str>)> = vec![
        (
            "twice",
            Box::new(|v: &mut Value| {
                let dup = patch(v, "src/new.c").clone();
                v["patches"].as_array_mut().unwrap().push(dup);
            }),
            vec!["src/new.c twice"],
        ),
        (
            "delete-with-content",
            Box::new(|v: &mut Value| {
                let p = patch(v, "docs/guide.md");
                p["content"] = json!(B64.encode(b"x"));
                p["blob"] = json!(hash(b"x"));
            }),
            vec!["docs/guide.md", "a delete carries no content"],
        ),
        (
            "update-without-base",
            Box::new(|v: &mut Value| {
                patch(v, "src/main.c")
                    .as_object_mut()
                    .unwrap()
                    .remove("base");
            }),
            vec!["src/main.c", "needs the base"],
        ),
        (
            "delete-without-base",
            Box::new(|v: &mut Value| {
                patch(v, "docs/guide.md")
                    .as_object_mut()
                    .unwrap()
                    .remove("base");
            }),
            vec!["docs/guide.md", "needs the base"],
        ),
        (
            "create-without-blob",
            Box::new(|v: &mut Value| {
                patch(v, "src/new.c")
                    .as_object_mut()
                    .unwrap()
                    .remove("blob");
            }),
            vec!["src/new.c", "needs a blob hash"],
        ),
        (
            "directory-mode",
            Box::new(|v: &mut Value| patch(v, "src/new.c")["mode"] = json!(0o040755)),
            vec!["src/new.c", "neither a regular file nor a symlink"],
        ),
        (
            "device-mode",
            Box::new(|v: &mut Value| patch(v, "src/new.c")["mode"] = json!(0o020644)),
            vec!["src/new.c", "neither a regular file nor a symlink"],
        ),
        (
            "patch-for-other-grant",
            Box::new(|v: &mut Value| {
                patch(v, "src/new.c")["grant_id"] = json!("g-0000000000000000")
            }),
            vec!["src/new.c", "g-0000000000000000"],
        ),
        (
            "update-as-create",
            // The agent's update of an existing file, passed off as a
            // create: the host has the file, so it is a conflict.
            Box::new(|v: &mut Value| {
                let p = patch(v, "src/main.c");
                p["operation"] = json!("create");
                p.as_object_mut().unwrap().remove("base");
            }),
            vec!["src/main.c", "nothing was written"],
        ),
        (
            "wrong-base",
            Box::new({
                let b = main_old.clone();
                move |v: &mut Value| patch(v, "README.md")["base"] = json!(b)
            }),
            vec!["README.md", "nothing was written", &main_old],
        ),
    ];
    for (name, f, wants) in cases {
        let dir = forged(&env, &set, name, f);
        refused(&env, &commit_from(&g, &dir), &wants);
    }
    assert_eq!(tree_digest(&env.host), before);
}

#[test]
fn a_set_for_another_grant_is_refused() {
    let (env, g) = session();
    let g2 = env.grant(&["--mode", "read_write_overlay"]);
    let before = tree_digest(&env.host);
    let (dir, set) = export(&env, &g, "set", true);
    refused(
        &env,
        &commit_from(&g2, &dir),
        &[&format!("is for grant {g}, not {g2}")],
    );
    // The set's grant changed, its patches' not.
    let forged_dir = forged(&env, &set, "regrant", |v| v["grant_id"] = json!(g2));
    refused(&env, &commit_from(&g, &forged_dir), &["is for grant", &g2]);
    refused(&env, &commit_from(&g2, &forged_dir), &["names grant", &g]);
    // A grant that does not exist.
    let unknown = forged(&env, &set, "unknown", |v| {
        v["grant_id"] = json!("g-0123456789abcdef")
    });
    refused(
        &env,
        &commit_from(&g, &unknown),
        &["is for grant g-0123456789abcdef"],
    );
    assert_eq!(tree_digest(&env.host), before);
    // Neither grant's session was touched.
    assert_eq!(pending(&env, &g), ALL);
    assert!(pending(&env, &g2).is_empty());
    // The set's `root` is not where it is applied: a set naming another
    // directory is applied to the grant's root or refused, never elsewhere.
    let elsewhere = env.dir.path().canonicalize().unwrap().join("elsewhere");
    fs::create_dir_all(elsewhere.join("src")).unwrap();
    fs::write(elsewhere.join("README.md"), "# project\n").unwrap();
    fs::write(elsewhere.join("src/main.c"), MAIN_OLD).unwrap();
    let elsewhere_before = tree_digest(&elsewhere);
    let rooted = forged(&env, &set, "rooted", |v| v["root"] = json!(elsewhere));
    if !env.wopfs(&commit_from(&g, &rooted)).status.success() {
        assert_eq!(tree_digest(&env.host), before);
        env.ok(&commit_from(&g, &dir));
    }
    assert_eq!(tree_digest(&elsewhere), elsewhere_before);
    assert_committed(&env);
}

#[test]
fn a_parent_replaced_by_a_symlink_is_never_written_through() {
    let (env, g) = session();
    let base = env.dir.path().canonicalize().unwrap();
    // `src` moves away and a symlink to a look-alike directory outside the
    // root takes its place: same names, same contents.
    let outside = base.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("main.c"), MAIN_OLD).unwrap();
    fs::write(outside.join("lib.c"), "int lib;\n").unwrap();
    let real_src = base.join("src-real");
    fs::rename(env.host.join("src"), &real_src).unwrap();
    std::os::unix::fs::symlink(&outside, env.host.join("src")).unwrap();
    // `gen` (new in the session) is planted as a relative symlink outside.
    let outside_gen = base.join("outside-gen");
    fs::create_dir_all(&outside_gen).unwrap();
    std::os::unix::fs::symlink("../outside-gen", env.host.join("gen")).unwrap();
    let before = tree_digest(&env.host);
    let outside_before = (tree_digest(&outside), tree_digest(&outside_gen));
    let (set, _) = export(&env, &g, "set", true);

    let cases: Vec<Vec<&str>> = vec![
        vec!["commit", &g, "--yes"],
        vec!["commit", &g, "--yes", "--path", "src/new.c"],
        vec!["commit", &g, "--yes", "--path", "src/main.c"],
        vec!["commit", &g, "--yes", "--path", "src"],
        vec!["commit", &g, "--yes", "--path", "gen/out.c"],
        vec!["commit", &g, "--yes", "--path", "gen"],
        vec!["commit", &g, "--dry-run", "--path", "src/new.c"],
        vec!["commit", &g, "--dry-run", "--path", "gen/out.c"],
        commit_from(&g, &set),
    ];
    for args in &cases {
        let err = refused(&env, args, &[]);
        assert!(
            err.contains("src") || err.contains("gen"),
            "{args:?}: names the path: {err}"
        );
        assert_eq!(
            (tree_digest(&outside), tree_digest(&outside_gen)),
            outside_before,
            "{args:?} wrote outside the root"
        );
    }
    assert_eq!(tree_digest(&env.host), before);
    assert_eq!(list_tree(&outside), ["lib.c", "main.c"]);
    assert!(list_tree(&outside_gen).is_empty());
    assert_eq!(
        fs::read_to_string(outside.join("main.c")).unwrap(),
        MAIN_OLD
    );
    // Paths elsewhere are unaffected by the symlinks and may be committed.
    env.ok(&["commit", &g, "--yes", "--path", "README.md"]);
    assert_eq!(
        fs::read_to_string(env.host.join("README.md")).unwrap(),
        "# edited\n"
    );
    assert_eq!(
        (tree_digest(&outside), tree_digest(&outside_gen)),
        outside_before
    );

    // The real directories back: the rest of the session commits.
    fs::remove_file(env.host.join("src")).unwrap();
    fs::remove_file(env.host.join("gen")).unwrap();
    fs::rename(&real_src, env.host.join("src")).unwrap();
    assert_eq!(
        pending(&env, &g),
        [
            "assets/big.bin",
            "docs/guide.md",
            "gen/out.c",
            "src/main.c",
            "src/new.c"
        ]
    );
    env.ok(&["commit", &g, "--yes"]);
    assert_committed(&env);
    assert_eq!(
        (tree_digest(&outside), tree_digest(&outside_gen)),
        outside_before
    );
}

#[test]
fn a_symlinked_subdirectory_or_file_is_never_written_through() {
    let env = Env::new();
    host_tree(&env);
    env.write("src/util/strings.c", "/* strings */\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(m.path("src/util/strings.c"), "/* edited */\n").unwrap();
    fs::write(m.path("src/util/new.c"), "new\n").unwrap();
    fs::write(m.path("src/lib.c"), "int lib2;\n").unwrap();
    drop(m);
    let base = env.dir.path().canonicalize().unwrap();
    let outside = base.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("strings.c"), "/* strings */\n").unwrap();
    fs::write(outside.join("lib.c"), "int lib;\n").unwrap();
    // A deeper directory becomes a symlink, and a file becomes a symlink
    // to an identical file outside.
    fs::remove_dir_all(env.host.join("src/util")).unwrap();
    std::os::unix::fs::symlink(&outside, env.host.join("src/util")).unwrap();
    fs::remove_file(env.host.join("src/lib.c")).unwrap();
    std::os::unix::fs::symlink(outside.join("lib.c"), env.host.join("src/lib.c")).unwrap();
    let before = tree_digest(&env.host);
    let outside_before = tree_digest(&outside);
    for args in [
        vec!["commit", &g, "--yes"],
        vec!["commit", &g, "--yes", "--path", "src/util/new.c"],
        vec!["commit", &g, "--yes", "--path", "src/util/strings.c"],
        vec!["commit", &g, "--yes", "--path", "src/lib.c"],
    ] {
        refused(&env, &args, &["src/"]);
        assert_eq!(tree_digest(&outside), outside_before, "{args:?}");
    }
    assert_eq!(tree_digest(&env.host), before);
    assert_eq!(list_tree(&outside), ["lib.c", "strings.c"]);
    assert_eq!(
        fs::read_to_string(outside.join("lib.c")).unwrap(),
        "int lib;\n"
    );
}

#[test]
fn a_committed_session_cannot_be_committed_rejected_or_mounted_again() {
    let (env, g) = session();
    let (old, _) = export(&env, &g, "set", true);
    let out = env.ok(&["commit", &g, "--yes"]);
    assert!(out.contains(&format!("committed grant {g}")), "{out}");
    assert_committed(&env);
    let before = tree_digest(&env.host);
    for args in [
        vec!["commit", &g, "--yes"],
        vec!["commit", &g, "--dry-run"],
        vec!["commit", &g, "--yes", "--path", "README.md"],
        commit_from(&g, &old),
        vec!["reject", &g, "--reason", "too late"],
    ] {
        refused(&env, &args, &["already been committed", &g]);
    }
    let mp = env.mountpoint("again");
    let e = env.fails(&["mount", &g, mp.to_str().unwrap()]);
    assert!(e.contains("already been committed"), "{e}");
    assert!(!is_mounted(&mp));
    assert_eq!(tree_digest(&env.host), before);
}

#[test]
fn a_rejected_session_leaves_the_host_and_cannot_be_committed() {
    let (env, g) = session();
    let before = tree_digest(&env.host);
    let phase = |env: &Env| {
        let v: Value = serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
        v[0]["phase"].as_str().unwrap().to_string()
    };
    assert_eq!(phase(&env), "open");
    let (old, _) = export(&env, &g, "set", true);
    refused(&env, &["reject", &g, "--reason", "  "], &["--reason"]);
    let out = env.ok(&["reject", &g, "--reason", "not what we asked"]);
    assert!(out.contains("unchanged"), "{out}");
    // `wopfs status` says so (a rejected grant does not read like an
    // untouched one).
    assert_eq!(phase(&env), "rejected");
    assert!(env.ok(&["status", &g]).contains("rejected"));
    assert_eq!(tree_digest(&env.host), before, "reject changed the host");
    for args in [
        vec!["commit", &g, "--yes"],
        vec!["commit", &g, "--dry-run"],
        vec!["commit", &g, "--yes", "--path", "README.md"],
        commit_from(&g, &old),
        vec!["reject", &g, "--reason", "again"],
    ] {
        refused(&env, &args, &["was rejected", "not what we asked", &g]);
    }
    let mp = env.mountpoint("again");
    let e = env.fails(&["mount", &g, mp.to_str().unwrap()]);
    assert!(e.contains("was rejected"), "{e}");
    assert!(!is_mounted(&mp));
    assert_eq!(tree_digest(&env.host), before);
    // The rejection is on record.
    let recs: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
    assert!(
        recs.as_array().unwrap().iter().any(|r| {
            r["operationType"] == "wopfs.patch.reject"
                && r["details"]["reason"] == "not what we asked"
        }),
        "{recs}"
    );
}

#[test]
fn a_host_change_is_a_conflict_and_path_commits_the_rest() {
    let (env, g) = session();
    // The host changes a file the agent updated.
    env.write("src/main.c", "int main(void) { return 2; }\n");
    let before = tree_digest(&env.host);
    let expected = hash(MAIN_OLD.as_bytes());
    let found = hash(b"int main(void) { return 2; }\n");
    let conflict = format!("src/main.c (expected {expected}, found {found})");
    let err = refused(
        &env,
        &["commit", &g, "--yes"],
        &[
            "1 path changed on the host",
            "nothing was written",
            &conflict,
        ],
    );
    for other in ["README.md", "src/new.c", "gen/out.c", "docs/guide.md"] {
        assert!(!err.contains(other), "{other} is no conflict: {err}");
    }
    refused(
        &env,
        &["commit", &g, "--dry-run"],
        &["nothing was written", &conflict],
    );
    refused(
        &env,
        &["commit", &g, "--yes", "--path", "src"],
        &["nothing was written", &conflict],
    );
    refused(
        &env,
        &[
            "commit",
            &g,
            "--yes",
            "--path",
            "README.md",
            "--path",
            "src/main.c",
        ],
        &[&conflict],
    );
    refused(
        &env,
        &["commit", &g, "--yes", "--path", "nowhere.c"],
        &["--path nowhere.c", "no pending change"],
    );
    assert_eq!(tree_digest(&env.host), before);
    assert_eq!(pending(&env, &g), ALL);
    // The conflict is on record as a failed commit.
    let recs: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
    assert!(
        recs.as_array().unwrap().iter().any(|r| {
            r["operationType"] == "wopfs.patch.commit"
                && r["event"] == "failure"
                && r["outcome"] == "conflict"
        }),
        "{recs}"
    );

    // Only the paths without a conflict: they apply, the rest stays pending.
    let out = env.ok(&[
        "commit",
        &g,
        "--yes",
        "--path",
        "README.md",
        "--path",
        "src/new.c",
        "--path",
        "docs/",
    ]);
    assert!(out.contains("rest stays pending"), "{out}");
    let read = |p: &str| fs::read_to_string(env.host.join(p)).unwrap();
    assert_eq!(read("README.md"), "# edited\n");
    assert_eq!(read("src/new.c"), "int new;\n");
    assert!(!env.host.join("docs/guide.md").exists());
    assert_eq!(read("src/main.c"), "int main(void) { return 2; }\n");
    assert!(!env.host.join("gen").exists());
    assert!(!env.host.join("assets").exists());
    assert_eq!(
        pending(&env, &g),
        ["assets/big.bin", "gen/out.c", "src/main.c"]
    );
    // The whole rest still conflicts; the conflict-free rest goes in.
    refused(&env, &["commit", &g, "--yes"], &[&conflict]);
    env.ok(&[
        "commit",
        &g,
        "--yes",
        "--path",
        "assets",
        "--path",
        "gen/out.c",
    ]);
    assert_eq!(fs::read(env.host.join("assets/big.bin")).unwrap(), big());
    assert_eq!(read("gen/out.c"), "out\n");
    assert_eq!(pending(&env, &g), ["src/main.c"]);
    let before = tree_digest(&env.host);
    refused(&env, &["commit", &g, "--yes"], &[&conflict]);
    assert_eq!(tree_digest(&env.host), before);
    // The host puts back what the agent saw: the last change goes in too.
    env.write("src/main.c", MAIN_OLD);
    env.ok(&["commit", &g, "--yes"]);
    assert_committed(&env);
    refused(&env, &["commit", &g, "--yes"], &["already been committed"]);
}

#[test]
fn conflicts_on_creates_updates_and_deletes_are_all_named() {
    let (env, g) = session();
    // The host creates the agent's new file with other content, deletes a
    // file the agent updated, and edits the file the agent deleted.
    env.write("src/new.c", "int host_new;\n");
    fs::remove_file(env.host.join("README.md")).unwrap();
    env.write("docs/guide.md", "guide, edited on the host\n");
    // And a file in a new directory with other content.
    env.write("gen/out.c", "host out\n");
    let before = tree_digest(&env.host);
    let err = refused(
        &env,
        &["commit", &g, "--yes"],
        &[
            "4 paths changed on the host",
            "nothing was written",
            &format!(
                "src/new.c (expected absent, found {})",
                hash(b"int host_new;\n")
            ),
            &format!("gen/out.c (expected absent, found {})", hash(b"host out\n")),
            &format!(
                "README.md (expected {}, found absent)",
                hash(b"# project\n")
            ),
            &format!(
                "docs/guide.md (expected {}, found {})",
                hash(b"guide\n"),
                hash(b"guide, edited on the host\n")
            ),
        ],
    );
    assert!(!err.contains("src/main.c"), "{err}");
    assert!(!err.contains("assets/big.bin"), "{err}");
    assert_eq!(tree_digest(&env.host), before);
    // A host that already holds the agent's content is no conflict.
    env.write("src/new.c", "int new;\n");
    let out = env.ok(&["commit", &g, "--yes", "--path", "src"]);
    assert!(out.contains("skip src/new.c"), "{out}");
    assert_eq!(
        fs::read_to_string(env.host.join("src/main.c")).unwrap(),
        MAIN_NEW
    );
}

#[test]
fn human_approval_needs_yes_and_records_the_approver() {
    let env = Env::new();
    host_tree(&env);
    let policy = env.dir.path().join("approve.toml");
    fs::write(
        &policy,
        "enabled = true\nmax_files = 1000\nmax_total_size_bytes = 104857600\n\
         allowed_modes = [\"read_only\", \"read_write_overlay\"]\n\
         require_reason = false\nrequire_human_approval = true\n",
    )
    .unwrap();
    let g = env.grant(&[
        "--mode",
        "read_write_overlay",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    edit(&env, &g);
    let before = tree_digest(&env.host);
    for args in [
        vec!["commit", &g],
        vec!["commit", &g, "--approver", "alice"],
        vec!["commit", &g, "--path", "README.md"],
    ] {
        refused(&env, &args, &["requires human approval", "--yes", &g]);
    }
    let (dir, _) = export(&env, &g, "set", true);
    refused(
        &env,
        &["commit", &g, "--from", dir.to_str().unwrap()],
        &["requires human approval"],
    );
    // A dry run needs no approval and writes nothing.
    let out = env.ok(&["commit", &g, "--dry-run"]);
    assert!(out.contains("would update README.md"), "{out}");
    assert!(out.contains("would delete docs/guide.md"), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert_eq!(tree_digest(&env.host), before);
    assert_eq!(pending(&env, &g), ALL);
    let recs: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
    assert!(
        !recs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["actor"] == "alice"),
        "a refused commit was recorded as alice's: {recs}"
    );

    env.ok(&["commit", &g, "--yes", "--approver", "alice"]);
    assert_committed(&env);
    let recs: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
    let recs = recs.as_array().unwrap();
    for event in ["start", "complete"] {
        assert!(
            recs.iter()
                .any(|r| r["operationType"] == "wopfs.patch.commit"
                    && r["actor"] == "alice"
                    && r["event"] == event
                    && r["grantId"] == g.as_str()),
            "no {event} record by alice: {recs:?}"
        );
    }
    env.ok(&["audit", "--verify"]);
}

#[test]
fn audit_verify_names_an_edited_line() {
    let (env, g) = session();
    // Refusals and a commit, all on record.
    refused(
        &env,
        &["commit", &g, "--yes", "--path", "x"],
        &["no pending"],
    );
    env.write("src/main.c", "host\n");
    refused(&env, &["commit", &g, "--yes"], &["nothing was written"]);
    env.write("src/main.c", MAIN_OLD);
    env.ok(&["commit", &g, "--yes"]);
    let out = env.ok(&["audit", "--verify"]);
    assert!(out.contains("hash chain intact"), "{out}");
    let log = env.state.join("audit.jsonl");
    let original = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 4, "{original}");

    let tamper = |n: usize, f: &dyn Fn(&str) -> String| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        l[n - 1] = f(&l[n - 1]);
        fs::write(&log, l.join("\n") + "\n").unwrap();
        let err = env.fails(&["audit", "--verify"]);
        fs::write(&log, &original).unwrap();
        err
    };
    // An edited line is caught where the chain breaks: at the next line.
    let err = tamper(2, &|l| {
        l.replacen("\"actor\":\"", "\"actor\":\"mallory ", 1)
    });
    assert!(err.starts_with("wopfs: "), "{err}");
    assert!(
        err.contains("line 3") && err.contains("line 2"),
        "names the line: {err}"
    );
    // The first line, a middle line, as garbage.
    let err = tamper(1, &|l| l.replacen("\"seq\":1", "\"seq\":1 ", 1));
    assert!(err.contains("line 2"), "{err}");
    let mid = lines.len() / 2;
    let err = tamper(mid, &|_| "not a record".into());
    assert!(err.contains(&format!("line {mid}")), "{err}");
    // The last line: only the head can tell.
    let last = lines.len();
    let err = tamper(last, &|l| {
        l.replacen("\"outcome\":\"", "\"outcome\":\"x", 1)
    });
    assert!(err.contains("last line was edited"), "{err}");
    // Restored, the log verifies again.
    let out = env.ok(&["audit", "--verify"]);
    assert!(out.contains(&format!("{last} records")), "{out}");
}

/// Paths, kinds, modes, contents, link targets and file mtimes, but not
/// directory mtimes (creating and removing a name touches its directory).
fn contents(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    list_tree(root)
        .into_iter()
        .map(|rel| {
            let p = root.join(&rel);
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_file() {
                format!(
                    "{} @{}.{}",
                    hash(&fs::read(&p).unwrap()),
                    m.mtime(),
                    m.mtime_nsec()
                )
            } else {
                "dir".to_string()
            };
            format!("{rel} {:o} {what}", m.mode())
        })
        .collect()
}

/// The session's set plus a create beneath its own new file `src/new.c`:
/// one path both a file and a directory.
fn file_and_dir_set(env: &Env, g: &str) -> PathBuf {
    let (_, set) = export(env, g, "set", true);
    forged(env, &set, "file-and-dir", |v| {
        let mut inner = patch(v, "src/new.c").clone();
        inner["path"] = json!("src/new.c/inner.c");
        v["patches"].as_array_mut().unwrap().push(inner);
    })
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test switches: cargo test --features fault-injection"
)]
fn a_failure_while_applying_is_rolled_back_and_the_session_stays_pending() {
    let (env, g) = session();
    let before = contents(&env.host);
    // The test-only switch fails the 4th host change as a full disk would.
    let out = wopfs_command()
        .args([
            "--state-dir",
            env.state.to_str().unwrap(),
            "commit",
            &g,
            "--yes",
        ])
        .env("WOPFS_TEST_ERROR_AFTER", "4")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the commit should have failed");
    assert!(
        err.starts_with("wopfs: ") && err.contains("No space left"),
        "{err}"
    );
    // Every file back as it was (the same inode: same mtime), every new
    // file and directory gone, no scratch names, no journal left.
    assert_eq!(contents(&env.host), before);
    assert!(!env
        .state
        .join("sessions")
        .join(&g)
        .join("commit.json")
        .exists());
    let recs: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
    assert!(
        recs.as_array().unwrap().iter().any(|r| {
            r["operationType"] == "wopfs.patch.commit"
                && r["event"] == "failure"
                && r["details"]["rolled_back"] == true
        }),
        "{recs}"
    );
    assert_eq!(pending(&env, &g), ALL);
    env.ok(&["commit", &g, "--yes"]);
    assert_committed(&env);
}

#[test]
fn a_set_with_a_path_both_file_and_directory_is_refused_before_writing() {
    let (env, g) = session();
    let dir = file_and_dir_set(&env, &g);
    refused(&env, &commit_from(&g, &dir), &["new.c"]);
}

#[test]
fn a_delete_beneath_a_symlinked_parent_is_refused_not_skipped() {
    let env = Env::new();
    host_tree(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::remove_file(m.path("docs/guide.md")).unwrap();
    drop(m);
    let base = env.dir.path().canonicalize().unwrap();
    let outside = base.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("guide.md"), "guide\n").unwrap();
    fs::rename(env.host.join("docs"), base.join("docs-real")).unwrap();
    std::os::unix::fs::symlink(&outside, env.host.join("docs")).unwrap();
    let outside_before = tree_digest(&outside);
    for args in [
        vec!["commit", &g, "--yes", "--path", "docs/guide.md"],
        vec!["commit", &g, "--yes"],
    ] {
        refused(&env, &args, &["docs"]);
        assert_eq!(tree_digest(&outside), outside_before, "{args:?}");
    }
    assert_eq!(pending(&env, &g), ["docs/guide.md"]);
    fs::remove_file(env.host.join("docs")).unwrap();
    fs::rename(base.join("docs-real"), env.host.join("docs")).unwrap();
    env.ok(&["commit", &g, "--yes"]);
    assert!(!env.host.join("docs/guide.md").exists());
}

#[test]
fn a_file_replaced_by_a_symlink_and_back_commits() {
    let env = Env::new();
    host_tree(&env);
    env.link("src/link.c", "main.c");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::remove_file(m.path("src/lib.c")).unwrap();
    std::os::unix::fs::symlink("main.c", m.path("src/lib.c")).unwrap();
    fs::remove_file(m.path("src/link.c")).unwrap();
    fs::write(m.path("src/link.c"), "now a file\n").unwrap();
    drop(m);
    assert_eq!(pending(&env, &g), ["src/lib.c", "src/link.c"]);
    env.ok(&["commit", &g, "--yes"]);
    assert_eq!(
        fs::read_link(env.host.join("src/lib.c")).unwrap(),
        Path::new("main.c")
    );
    assert_eq!(
        fs::read_to_string(env.host.join("src/link.c")).unwrap(),
        "now a file\n"
    );
    assert!(!fs::symlink_metadata(env.host.join("src/link.c"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_file_replaced_by_a_directory_commits() {
    let env = Env::new();
    host_tree(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::remove_file(m.path("docs/guide.md")).unwrap();
    fs::create_dir(m.path("docs/guide.md")).unwrap();
    fs::write(m.path("docs/guide.md/index.md"), "index\n").unwrap();
    drop(m);
    assert_eq!(
        pending(&env, &g),
        ["docs/guide.md", "docs/guide.md/index.md"]
    );
    env.ok(&["commit", &g, "--yes"]);
    assert_eq!(
        fs::read_to_string(env.host.join("docs/guide.md/index.md")).unwrap(),
        "index\n"
    );
}
