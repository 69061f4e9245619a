//! A hostile patch set given to `wopfs commit --from`, built by hand for an
//! overlay grant (no mount needed): blobs that are symlinks (to a file
//! outside with the right content, to `/dev/zero`), FIFOs, device nodes or
//! directories; blobs longer or shorter than their declared size; sizes
//! past the grant's limit (2^63 among them), alone and summed; modes with
//! stray bits; symlink targets that are empty, too long or hold a NUL;
//! a `patchset.json` (or `blobs/`) that is a symlink, a FIFO or too big;
//! a bad `created_at`. Every commit runs under a deadline, so one that
//! blocks fails the test instead of hanging it. Each refusal is one
//! `wopfs: ` line naming the patch, the blob and the reason, and the host
//! tree is left exactly as it was; the same set without the fault commits.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use common::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How long one `wopfs commit` may take before it counts as blocked.
const DEADLINE: Duration = Duration::from_secs(30);

const BIG: &str = "assets/big.bin";
const SMALL: &str = "src/new.c";
const LINK: &str = "src/link.c";

fn hash(data: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(data).to_hex())
}

fn hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Above the inline limit: what `export` would put in `blobs/`.
fn big() -> Vec<u8> {
    (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect()
}

/// A host tree and a read_write_overlay grant on it.
fn fixture() -> (Env, String) {
    let env = Env::new();
    env.write("README.md", "# project\n");
    env.write("src/main.c", "int main(void) { return 0; }\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    (env, g)
}

/// The grant's `max_total_size_bytes`, from its record.
fn max_total(env: &Env, g: &str) -> u64 {
    let rec = fs::read(env.state.join("sessions").join(g).join("grant.json")).unwrap();
    let v: Value = serde_json::from_slice(&rec).unwrap();
    v["max_total_size_bytes"]
        .as_u64()
        .expect("max_total_size_bytes")
}

/// A create of `path`: regular file, mode 0644, size and hash of `data`;
/// inline content when `inline`, else the content belongs in `blobs/`.
fn create(g: &str, path: &str, data: &[u8], inline: bool) -> Value {
    let mut p = json!({
        "grant_id": g,
        "path": path,
        "operation": "create",
        "blob": hash(data),
        "mode": 0o100644,
        "size": data.len(),
    });
    if inline {
        p["content"] = json!(B64.encode(data));
    }
    p
}

/// A create of the symlink `path` pointing at `target` (inline).
fn create_link(g: &str, path: &str, target: &[u8]) -> Value {
    let mut p = create(g, path, target, true);
    p["mode"] = json!(0o120777);
    p
}

/// Writes the set `name` (`patchset.json` with `patches`), and `blobs/`
/// when `blobs` holds anything; returns its directory.
fn write_set(env: &Env, g: &str, name: &str, patches: Vec<Value>, blobs: &[&[u8]]) -> PathBuf {
    let dir = env.dir.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    let set = json!({
        "format": "wopfs.patchset/1",
        "grant_id": g,
        "root": env.host,
        "created_at": "2025-01-01T00:00:00Z",
        "patches": patches,
    });
    fs::write(
        dir.join("patchset.json"),
        serde_json::to_vec_pretty(&set).unwrap(),
    )
    .unwrap();
    if !blobs.is_empty() {
        fs::create_dir_all(dir.join("blobs")).unwrap();
        for b in blobs {
            fs::write(dir.join("blobs").join(hex(b)), b).unwrap();
        }
    }
    dir
}

/// A set with one blob create of `BIG` (content `data`) and an inline
/// create of `SMALL`; the blob file is left for the caller to plant.
/// Returns the set's directory and the blob's path.
fn blob_set(env: &Env, g: &str, name: &str, data: &[u8]) -> (PathBuf, PathBuf) {
    let dir = write_set(
        env,
        g,
        name,
        vec![
            create(g, BIG, data, false),
            create(g, SMALL, b"int new;\n", true),
        ],
        &[],
    );
    fs::create_dir_all(dir.join("blobs")).unwrap();
    let blob = dir.join("blobs").join(hex(data));
    (dir, blob)
}

/// Runs wopfs with a deadline: a run that outlives it is killed and the
/// test fails (a commit blocked on a FIFO, or reading `/dev/zero`).
fn run(env: &Env, args: &[&str]) -> Output {
    let mut cmd = wopfs_command();
    cmd.arg("--state-dir")
        .arg(&env.state)
        .args(args)
        .env_remove("WOPFS_STATE_DIR");
    output_within(&mut cmd, DEADLINE)
}

fn commit_args<'a>(g: &'a str, from: &'a Path) -> Vec<&'a str> {
    vec!["commit", g, "--yes", "--from", from.to_str().unwrap()]
}

/// `wopfs commit G --yes --from FROM` must be refused: exit non-zero, one
/// `wopfs: ` line containing every `want`, the host tree exactly as
/// before. Returns the line.
fn refused(env: &Env, g: &str, from: &Path, wants: &[&str]) -> String {
    let before = tree_digest(&env.host);
    let args = commit_args(g, from);
    let out = run(env, &args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("refused {}: {}", from.display(), err.trim_end());
    assert!(
        !out.status.success(),
        "{args:?} should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
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

/// `wopfs commit G --yes --from FROM` succeeds.
fn commits(env: &Env, g: &str, from: &Path) {
    let args = commit_args(g, from);
    let out = run(env, &args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// A character device like `/dev/zero` (1, 5): the tests run as root.
fn mknod_zero(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
    assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
}

/// The host holds the good set's changes.
fn assert_good_committed(env: &Env) {
    assert_eq!(fs::read(env.host.join(BIG)).unwrap(), big());
    assert_eq!(
        fs::read_to_string(env.host.join(SMALL)).unwrap(),
        "int new;\n"
    );
}

#[test]
fn a_hand_built_set_commits() {
    let (env, g) = fixture();
    let data = big();
    let dir = write_set(
        &env,
        &g,
        "good",
        vec![
            create(&g, BIG, &data, false),
            create_link(&g, LINK, b"main.c"),
            create(&g, SMALL, b"int new;\n", true),
        ],
        &[&data],
    );
    commits(&env, &g, &dir);
    assert_good_committed(&env);
    assert_eq!(
        fs::read_link(env.host.join(LINK)).unwrap(),
        Path::new("main.c")
    );
}

#[test]
fn a_blob_that_is_a_symlink_is_refused_even_with_the_right_content() {
    let (env, g) = fixture();
    let data = big();
    let h = hex(&data);
    // Outside the set, a file with exactly the declared content: following
    // the link would pass every size and hash check.
    let outside = env.dir.path().join("outside.bin");
    fs::write(&outside, &data).unwrap();
    let (dir, blob) = blob_set(&env, &g, "abs", &data);
    symlink(&outside, &blob).unwrap();
    refused(&env, &g, &dir, &[BIG, &h, "symbolic link"]);
    // A relative link, to the same file.
    let (dir, blob) = blob_set(&env, &g, "rel", &data);
    symlink("../../outside.bin", &blob).unwrap();
    assert_eq!(fs::read(&blob).unwrap(), data, "the link resolves");
    refused(&env, &g, &dir, &[BIG, &h, "symbolic link"]);

    // A link to /dev/zero, declared as 100000 zero bytes (whose hash is
    // right): refused without reading, and quickly.
    let zeros = vec![0u8; 100_000];
    let (dir, blob) = blob_set(&env, &g, "zero", &zeros);
    symlink("/dev/zero", &blob).unwrap();
    let start = Instant::now();
    refused(&env, &g, &dir, &[BIG, &hex(&zeros), "symbolic link"]);
    assert!(start.elapsed() < Duration::from_secs(10));

    // The same set with a real blob commits.
    fs::remove_file(&blob).unwrap();
    let (dir, blob) = blob_set(&env, &g, "real", &data);
    fs::write(&blob, &data).unwrap();
    commits(&env, &g, &dir);
    assert_good_committed(&env);
}

#[test]
fn a_fifo_blob_is_refused_without_blocking() {
    let (env, g) = fixture();
    let data = big();
    let (dir, blob) = blob_set(&env, &g, "fifo", &data);
    mkfifo(&blob);
    let start = Instant::now();
    refused(
        &env,
        &g,
        &dir,
        &[BIG, &hex(&data), "FIFO", "not a regular file"],
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    // A FIFO as patchset.json is refused the same way.
    let fdir = env.dir.path().join("fifo-json");
    fs::create_dir_all(&fdir).unwrap();
    mkfifo(&fdir.join("patchset.json"));
    refused(
        &env,
        &g,
        &fdir,
        &["patchset.json", "FIFO", "not a regular file"],
    );
    refused(
        &env,
        &g,
        &fdir.join("patchset.json"),
        &["patchset.json", "FIFO"],
    );
}

#[test]
fn a_device_node_or_directory_blob_is_refused() {
    let (env, g) = fixture();
    // A /dev/zero-like device, declared as zeros with the right hash.
    let zeros = vec![0u8; 100_000];
    let (dir, blob) = blob_set(&env, &g, "dev", &zeros);
    mknod_zero(&blob);
    refused(
        &env,
        &g,
        &dir,
        &[BIG, &hex(&zeros), "character device", "not a regular file"],
    );
    let data = big();
    let (dir, blob) = blob_set(&env, &g, "dir", &data);
    fs::create_dir(&blob).unwrap();
    refused(&env, &g, &dir, &[BIG, &hex(&data), "a directory"]);
    // A device as patchset.json.
    let ddir = env.dir.path().join("dev-json");
    fs::create_dir_all(&ddir).unwrap();
    mknod_zero(&ddir.join("patchset.json"));
    refused(&env, &g, &ddir, &["patchset.json", "character device"]);
}

#[test]
fn a_blob_longer_or_shorter_than_its_size_is_refused() {
    let (env, g) = fixture();
    let data = big();
    let h = hex(&data);
    // Longer: the declared content, then more.
    let (dir, blob) = blob_set(&env, &g, "longer", &data);
    let mut longer = data.clone();
    longer.extend_from_slice(b"and then some");
    fs::write(&blob, &longer).unwrap();
    refused(
        &env,
        &g,
        &dir,
        &[
            BIG,
            &h,
            "100013 bytes, longer than its declared size 100000",
        ],
    );
    // Shorter: a prefix.
    let (dir, blob) = blob_set(&env, &g, "shorter", &data);
    fs::write(&blob, &data[..50_000]).unwrap();
    refused(
        &env,
        &g,
        &dir,
        &[
            BIG,
            &h,
            "does not match its blob hash",
            "holds 50000 bytes, not its declared size 100000",
        ],
    );
    // Shorter with a hash that matches it: only the size is wrong.
    let short = &data[..50_000];
    let mut p = create(&g, BIG, short, false);
    p["size"] = json!(100_000);
    let dir = write_set(&env, &g, "size-lies", vec![p], &[short]);
    let err = refused(
        &env,
        &g,
        &dir,
        &[
            BIG,
            &hex(short),
            "holds 50000 bytes, not its declared size 100000",
        ],
    );
    assert!(!err.contains("does not match"), "{err}");

    // Inline contents are held to their size too.
    for (n, (size, want)) in [
        (8, "holds 9 bytes, not its declared size 8"),
        (10, "holds 9 bytes, not its declared size 10"),
        (0, "holds 9 bytes, not its declared size 0"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = create(&g, SMALL, b"int new;\n", true);
        p["size"] = json!(size);
        let dir = write_set(&env, &g, &format!("inline{n}"), vec![p], &[]);
        refused(&env, &g, &dir, &[SMALL, want]);
    }

    // The size is required, inline or not.
    for (n, inline) in [false, true].into_iter().enumerate() {
        let mut p = create(&g, BIG, &data, inline);
        p.as_object_mut().unwrap().remove("size");
        let dir = write_set(&env, &g, &format!("nosize{n}"), vec![p], &[&data]);
        refused(&env, &g, &dir, &[BIG, &h, "needs its size"]);
    }
}

#[test]
fn sizes_past_the_grant_limit_are_refused_before_any_blob_is_read() {
    let (env, g) = fixture();
    let max = max_total(&env, &g);
    let data = big();
    for (n, size) in [1u64 << 63, u64::MAX, max + 1].into_iter().enumerate() {
        // The blob is a FIFO: had it been opened, the refusal would say so.
        let (dir, blob) = blob_set(&env, &g, &format!("huge{n}"), &data);
        mkfifo(&blob);
        let mut set: Value =
            serde_json::from_slice(&fs::read(dir.join("patchset.json")).unwrap()).unwrap();
        set["patches"][0]["size"] = json!(size);
        fs::write(dir.join("patchset.json"), set.to_string()).unwrap();
        let err = refused(
            &env,
            &g,
            &dir,
            &[
                BIG,
                &hex(&data),
                &format!("size {size} is more than grant {g}'s max_total_size_bytes ({max})"),
            ],
        );
        assert!(!err.contains("FIFO"), "{err}");
    }
    // Each within the limit, together past it.
    let half = max / 2 + 1;
    let mut a = create(&g, BIG, &data, false);
    a["size"] = json!(half);
    let mut b = create(&g, "assets/other.bin", b"other", false);
    b["size"] = json!(half);
    let dir = write_set(&env, &g, "sum", vec![a, b], &[]);
    refused(
        &env,
        &g,
        &dir,
        &[
            "assets/other.bin",
            &format!("brings the set's contents to {} bytes", 2 * half),
            &format!("max_total_size_bytes ({max})"),
        ],
    );
    // 2^64 is no u64 at all.
    let dir = env.dir.path().join("huge0");
    let text = fs::read_to_string(dir.join("patchset.json")).unwrap();
    fs::write(
        dir.join("patchset.json"),
        text.replace(&(1u64 << 63).to_string(), "18446744073709551616"),
    )
    .unwrap();
    refused(&env, &g, &dir, &["patchset.json", "malformed"]);
}

#[test]
fn modes_must_be_a_file_or_symlink_with_permission_bits_only() {
    let (env, g) = fixture();
    let small = b"int new;\n";
    for (n, (mode, wants)) in [
        (0o1100644u64, vec!["mode 1100644 has bits 1000000 besides"]),
        (0o300644, vec!["mode 300644 has bits 200000 besides"]),
        (0o20100755, vec!["mode 20100755 has bits 20000000 besides"]),
        (0o37777777777, vec!["neither a regular file nor a symlink"]),
        (
            0o644,
            vec!["mode 644 is neither a regular file nor a symlink"],
        ),
        (0o060644, vec!["neither a regular file nor a symlink"]),
        (0o010644, vec!["neither a regular file nor a symlink"]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = create(&g, SMALL, small, true);
        p["mode"] = json!(mode);
        let dir = write_set(&env, &g, &format!("mode{n}"), vec![p], &[]);
        let h = hex(small);
        let mut w = vec![SMALL, h.as_str()];
        w.extend(wants);
        refused(&env, &g, &dir, &w);
    }
    // A symlink's mode with a stray bit.
    let mut p = create_link(&g, LINK, b"main.c");
    p["mode"] = json!(0o1120777);
    let dir = write_set(&env, &g, "link-mode", vec![p], &[]);
    refused(&env, &g, &dir, &[LINK, "mode 1120777 has bits 1000000"]);
    // Past u32, or absent.
    let mut p = create(&g, SMALL, small, true);
    p["mode"] = json!(1u64 << 32);
    let dir = write_set(&env, &g, "mode-u64", vec![p], &[]);
    refused(&env, &g, &dir, &["patchset.json", "malformed"]);
    let mut p = create(&g, SMALL, small, true);
    p.as_object_mut().unwrap().remove("mode");
    let dir = write_set(&env, &g, "mode-none", vec![p], &[]);
    refused(&env, &g, &dir, &[SMALL, "needs its mode"]);
}

#[test]
fn symlink_targets_must_be_non_empty_short_and_free_of_nul() {
    let (env, g) = fixture();
    let long = vec![b'a'; 4096];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty",
            b"".to_vec(),
            "a symlink's target (its content) is empty",
        ),
        (
            "nul",
            b"main\0.c".to_vec(),
            "a symlink's target contains a NUL byte",
        ),
        ("nul-end", b"main.c\0".to_vec(), "contains a NUL byte"),
        (
            "long",
            long.clone(),
            "a symlink's target is 4096 bytes, more than 4095",
        ),
    ];
    for (name, target, want) in cases {
        let dir = write_set(&env, &g, name, vec![create_link(&g, LINK, &target)], &[]);
        refused(&env, &g, &dir, &[LINK, &hex(&target), want]);
    }
    // The long target from a blob instead: refused before it is read.
    let mut p = create_link(&g, LINK, &long);
    p.as_object_mut().unwrap().remove("content");
    let dir = write_set(&env, &g, "long-blob", vec![p], &[]);
    fs::create_dir_all(dir.join("blobs")).unwrap();
    mkfifo(&dir.join("blobs").join(hex(&long)));
    let err = refused(&env, &g, &dir, &[LINK, "more than 4095"]);
    assert!(!err.contains("FIFO"), "{err}");
    // 4095 bytes is the longest allowed (a target inside the view, as the
    // commit's symlink rule wants: `././…//main.c`).
    let mut ok = b"./".repeat(2044);
    ok.extend_from_slice(b"/main.c");
    assert_eq!(ok.len(), 4095);
    let dir = write_set(&env, &g, "longest", vec![create_link(&g, LINK, &ok)], &[]);
    commits(&env, &g, &dir);
    assert_eq!(
        fs::read_link(env.host.join(LINK))
            .unwrap()
            .as_os_str()
            .len(),
        4095
    );
}

#[test]
fn a_patchset_json_or_blobs_dir_that_is_a_symlink_is_refused() {
    let (env, g) = fixture();
    let data = big();
    let good = write_set(
        &env,
        &g,
        "good",
        vec![
            create(&g, BIG, &data, false),
            create(&g, SMALL, b"int new;\n", true),
        ],
        &[&data],
    );
    // A directory whose patchset.json is a link to the good one.
    let linked = env.dir.path().join("linked");
    fs::create_dir_all(&linked).unwrap();
    symlink(good.join("patchset.json"), linked.join("patchset.json")).unwrap();
    symlink(good.join("blobs"), linked.join("blobs")).unwrap();
    refused(&env, &g, &linked, &["patchset.json", "is a symbolic link"]);
    refused(
        &env,
        &g,
        &linked.join("patchset.json"),
        &["patchset.json", "is a symbolic link"],
    );
    // A real patchset.json whose blobs/ is a link to the good blobs.
    let blobs_linked = env.dir.path().join("blobs-linked");
    fs::create_dir_all(&blobs_linked).unwrap();
    fs::copy(
        good.join("patchset.json"),
        blobs_linked.join("patchset.json"),
    )
    .unwrap();
    symlink(good.join("blobs"), blobs_linked.join("blobs")).unwrap();
    refused(
        &env,
        &g,
        &blobs_linked,
        &["blobs", "is a symbolic link", "real directory"],
    );
    // blobs/ a regular file.
    let blobs_file = env.dir.path().join("blobs-file");
    fs::create_dir_all(&blobs_file).unwrap();
    fs::copy(good.join("patchset.json"), blobs_file.join("patchset.json")).unwrap();
    fs::write(blobs_file.join("blobs"), b"").unwrap();
    refused(&env, &g, &blobs_file, &["blobs", "not a directory"]);
    // patchset.json a directory.
    let json_dir = env.dir.path().join("json-dir");
    fs::create_dir_all(json_dir.join("patchset.json")).unwrap();
    refused(&env, &g, &json_dir, &["patchset.json", "a directory"]);

    // The good set itself commits.
    commits(&env, &g, &good);
    assert_good_committed(&env);
}

#[test]
fn an_oversized_patchset_json_is_refused_unread() {
    let (env, g) = fixture();
    let dir = env.dir.path().join("huge-json");
    fs::create_dir_all(&dir).unwrap();
    // Sparse: 1 GiB and a byte, holding nothing.
    let f = fs::File::create(dir.join("patchset.json")).unwrap();
    f.set_len((1 << 30) + 1).unwrap();
    drop(f);
    let start = Instant::now();
    refused(
        &env,
        &g,
        &dir,
        &["patchset.json", "1073741825 bytes", "1 GiB"],
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn created_at_hashes_and_per_operation_fields_are_checked() {
    let (env, g) = fixture();
    let small = b"int new;\n";
    let readme = hash(b"# project\n");
    let write_raw = |name: &str, f: &dyn Fn(&mut Value)| {
        let dir = write_set(&env, &g, name, vec![create(&g, SMALL, small, true)], &[]);
        let mut set: Value =
            serde_json::from_slice(&fs::read(dir.join("patchset.json")).unwrap()).unwrap();
        f(&mut set);
        fs::write(dir.join("patchset.json"), set.to_string()).unwrap();
        dir
    };
    for (n, when) in [
        "yesterday",
        "",
        "2025-01-01",
        "2025-13-01T00:00:00Z",
        "2025-01-01T00:00:00+02:00",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = write_raw(&format!("when{n}"), &|v| v["created_at"] = json!(when));
        refused(&env, &g, &dir, &["patchset.json", "created_at", "RFC 3339"]);
    }
    let dir = write_raw("format", &|v| v["format"] = json!("wopfs.patchset/0"));
    refused(&env, &g, &dir, &["patchset.json", "has format"]);

    let table: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "blob-upper",
            {
                let mut p = create(&g, SMALL, small, true);
                p["blob"] = json!(hash(small).to_uppercase().replace("BLAKE3", "blake3"));
                p
            },
            vec![SMALL, "is not a blake3 hash"],
        ),
        (
            "create-with-base",
            {
                let mut p = create(&g, SMALL, small, true);
                p["base"] = json!(readme);
                p
            },
            vec![SMALL, "a create has no base"],
        ),
        (
            "base-not-hash",
            json!({"grant_id": g, "path": "README.md", "operation": "delete", "base": "sha1:abc"}),
            vec!["README.md", "base \"sha1:abc\" is not a blake3 hash"],
        ),
        (
            "delete-with-size",
            json!({"grant_id": g, "path": "README.md", "operation": "delete", "base": readme, "size": 0}),
            vec!["README.md", "a delete carries no mode or size"],
        ),
        (
            "delete-with-mode",
            json!({"grant_id": g, "path": "README.md", "operation": "delete", "base": readme, "mode": 0o100644}),
            vec!["README.md", "a delete carries no mode or size"],
        ),
    ];
    for (name, p, wants) in table {
        let dir = write_set(&env, &g, name, vec![p], &[]);
        refused(&env, &g, &dir, &wants);
    }
    // The unforged set commits.
    let dir = write_raw("plain", &|_| {});
    commits(&env, &g, &dir);
    assert_eq!(
        fs::read_to_string(env.host.join(SMALL)).unwrap(),
        "int new;\n"
    );
}
