//! Delegation never widens, wherever a token is made or used: `wopfs token
//! delegate`, the API's `/v1/delegate`, and tokens minted elsewhere whose
//! chain widens, presented at `mount --token` and `run --token`. And a
//! token's bucket binds it to one tree (`wopfs bucket`).
//!
//! Every refusal is checked by its text, and for what did not happen:
//! no token printed, nothing mounted, no session recorded, no command run,
//! the host untouched.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use wopfs::clock::SystemClock;
use wopfs::policy::Mode;
use wopfs::token::{self, Claims};

/// The tests' key: [`KEY_B64`] is in the reference format, a 32-byte
/// Ed25519 seed as base64, as `A2A_GRANT_SIGNING_KEY` holds it.
fn sk() -> SigningKey {
    let seed: [u8; 32] = STANDARD.decode(KEY_B64).unwrap().try_into().unwrap();
    SigningKey::from_bytes(&seed)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `wopfs --state-dir STATE ARGS…` with the tests' key in the environment.
fn wopfs(env: &Env, args: &[&str]) -> Output {
    wopfs_command()
        .arg("--state-dir")
        .arg(&env.state)
        .args(args)
        .env_remove("WOPFS_STATE_DIR")
        .env_remove(token::VERIFYING_KEY_ENV)
        .env(token::SIGNING_KEY_ENV, KEY_B64)
        .output()
        .expect("running wopfs")
}

fn ok(env: &Env, args: &[&str]) -> String {
    let out = wopfs(env, args);
    assert!(
        out.status.success(),
        "wopfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Expects a refusal: exit 1, one sentence on stderr, nothing on stdout.
fn refused(env: &Env, args: &[&str]) -> String {
    let out = wopfs(env, args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "wopfs {args:?}: {err}");
    assert!(
        out.stdout.is_empty(),
        "a refusal prints nothing: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.starts_with("wopfs: ") && err.trim_end().lines().count() == 1,
        "one sentence: {err:?}"
    );
    err
}

fn claims(t: &str) -> Claims {
    token::verify(t, &sk().verifying_key(), None, &SystemClock).unwrap()
}

/// Signs claims as any holder of the key could, elsewhere.
fn forge(c: &Claims) -> String {
    token::encode(&sk(), c).unwrap()
}

fn sessions(env: &Env) -> usize {
    fs::read_dir(env.state.join("sessions")).map_or(0, |d| d.count())
}

fn audit_count(env: &Env, op: &str) -> usize {
    let log: Value = serde_json::from_str(&env.ok(&["audit", "--json"])).unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operationType"] == op)
        .count()
}

fn tree(env: &Env) {
    env.write("src/app/main.py", "print('main')\n");
    env.write("src/lib.py", "def f(): pass\n");
    env.write("src/private/notes.md", "private\n");
    env.write(".github/workflows/ci.yml", "original\n");
    env.write("tests/test_a.py", "def test(): pass\n");
}

/// A root token for `audience`, bucket payments, minted with this state dir.
fn mint(env: &Env, audience: &str, extra: &[&str]) -> String {
    let mut a = vec![
        "token",
        "mint",
        "--issuer",
        "orchestrator",
        "--audience",
        audience,
        "--bucket",
        "payments",
        "--ttl",
        "600",
    ];
    a.extend_from_slice(extra);
    ok(env, &a)
}

fn mount_args<'a>(env: &'a Env, t: &'a str, audience: &'a str, mp: &'a Path) -> Vec<&'a str> {
    vec![
        "mount",
        "--token",
        t,
        "--root",
        s(&env.host),
        "--audience",
        audience,
        s(mp),
    ]
}

/// A fresh grant-token id (the a2a form, `g-` and 16 hex digits).
fn new_id(n: u64) -> String {
    format!("g-{:016x}", 0x5c0_9e00_0000_0000u64 + n)
}

#[test]
fn cli_delegation_never_widens_the_write_scope() {
    let env = Env::new();
    tree(&env);
    ok(&env, &["bucket", "set", "payments", s(&env.host)]);
    // The parent: src/** writable, no write prefixes, so it may
    // create files only under src/ (it gets EACCES in .github/).
    let parent = mint(
        &env,
        "worker",
        &["--allow", "src/**", "--mode", "read_write_overlay"],
    );
    let delegations = audit_count(&env, "wopfs.token.delegate");
    let scope = "the parent has no write prefixes, so it may create files only where its allow patterns match (src/**)";
    let cases: &[(&[&str], &str)] = &[
        (
            &["--write-prefix", ".github"],
            "write prefix .github/ is outside the parent's write scope",
        ),
        (
            &["--write-prefix", "/.github/workflows/"],
            "write prefix .github/workflows/ is outside the parent's write scope",
        ),
        (
            &["--outputs-prefix", "tests"],
            "write prefix tests/ is outside the parent's write scope",
        ),
        (
            &["--write-prefix", "SRC"],
            "write prefix SRC/ is outside the parent's write scope",
        ),
        (
            &["--write-prefix", "srcx"],
            "write prefix srcx/ is outside the parent's write scope",
        ),
        (&["--write-prefix", "src/../.github"], "invalid"),
        (&["--write-prefix", "src/app/../../.github"], "'..'"),
        (
            &["--allow", "src/../.github/**"],
            "allow pattern src/../.github/** has an empty, '.' or '..' segment",
        ),
        (
            &["--allow", "**"],
            "allow pattern ** is not covered by the parent's patterns (src/**)",
        ),
        (
            &["--mode", "read_write_direct"],
            "mode read_write_direct is higher than the parent's mode read_write_overlay",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["token", "delegate", &parent, "--audience", "sub"];
        a.extend_from_slice(args);
        let err = refused(&env, &a);
        assert!(
            err.contains("delegation refused") || err.contains("invalid"),
            "{err}"
        );
        assert!(err.contains(want), "{args:?}: {err}");
        if want.contains("write scope") {
            assert!(err.contains(scope), "{err}");
        }
    }
    assert_eq!(
        audit_count(&env, "wopfs.token.delegate"),
        delegations,
        "nothing was delegated"
    );

    // A parent with write prefixes: a child's prefix must lie beneath one,
    // an ancestor (`src` of `src/app`) is refused.
    let narrow = mint(
        &env,
        "worker",
        &[
            "--allow",
            "src/**",
            "--write-prefix",
            "src/app",
            "--mode",
            "read_write_overlay",
        ],
    );
    for (p, want) in [
        (
            "src",
            "write prefix src/ is outside the parent's write prefixes (src/app/)",
        ),
        (
            "src/apple",
            "write prefix src/apple/ is outside the parent's write prefixes (src/app/)",
        ),
        (
            ".github",
            "write prefix .github/ is outside the parent's write prefixes (src/app/)",
        ),
    ] {
        let err = refused(
            &env,
            &[
                "token",
                "delegate",
                &narrow,
                "--audience",
                "sub",
                "--write-prefix",
                p,
            ],
        );
        assert!(err.contains(want), "{p}: {err}");
    }
    ok(
        &env,
        &[
            "token",
            "delegate",
            &narrow,
            "--audience",
            "sub",
            "--write-prefix",
            "src/app/gen/",
        ],
    );

    // What is within is accepted, mounts with this state dir (its chain
    // is known here) and writes only there; the commit applies only that.
    let child = ok(
        &env,
        &[
            "token",
            "delegate",
            &parent,
            "--audience",
            "sub",
            "--write-prefix",
            "src/gen",
        ],
    );
    assert_eq!(claims(&child).write_prefixes, vec!["src/gen/".to_string()]);
    let mp = env.mountpoint("mnt");
    let out = wopfs(&env, &mount_args(&env, &child, "sub", &mp));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let m = Mounted::new(mp.clone(), env.daemon_pid(&gid));
    fs::create_dir(m.path("src/gen")).unwrap();
    fs::write(m.path("src/gen/new.py"), "x = 1\n").unwrap();
    assert_eq!(errno(fs::create_dir(m.path(".github"))), libc::EACCES);
    assert_eq!(
        errno(fs::write(m.path("src/lib.py"), "changed\n")),
        libc::EACCES
    );
    drop(m);
    env.ok(&["commit", &gid, "--yes"]);
    assert_eq!(
        fs::read_to_string(env.host.join("src/gen/new.py")).unwrap(),
        "x = 1\n"
    );
    assert_eq!(
        fs::read_to_string(env.host.join(".github/workflows/ci.yml")).unwrap(),
        "original\n"
    );
}

#[test]
fn a_widened_chain_minted_elsewhere_is_refused_at_mount_and_run() {
    let env = Env::new();
    tree(&env);
    ok(&env, &["bucket", "set", "payments", s(&env.host)]);
    let parent = mint(
        &env,
        "worker",
        &[
            "--allow",
            "src/**",
            "--deny",
            "src/private/**",
            "--mode",
            "read_write_overlay",
        ],
    );
    let p = claims(&parent);
    // What another implementation, or an older wopfs, signed for the
    // parent's audience: the parent's child, wider than the parent.
    let child = |n: u64, edit: &dyn Fn(&mut Claims)| {
        let mut c = p.clone();
        c.grant_id = new_id(n);
        c.issuer = "worker".into();
        c.audience = "sub".into();
        c.parent_grant_id = Some(p.grant_id.clone());
        c.delegation_depth = 1;
        edit(&mut c);
        forge(&c)
    };
    let github = child(1, &|c| c.write_prefixes = vec![".github/".into()]);
    let cases: Vec<(String, String)> = vec![
        (
            github.clone(),
            "write prefix .github/ is outside the parent's write scope".into(),
        ),
        (
            child(2, &|c| c.outputs_prefix = Some("tests".into())),
            "write prefix tests/ is outside the parent's write scope".into(),
        ),
        (
            child(3, &|c| c.deny_patterns.clear()),
            "the parent's deny pattern src/private/** is missing".into(),
        ),
        (
            child(4, &|c| c.allow_patterns = vec!["**".into()]),
            "allow pattern ** is not covered by the parent's patterns (src/**)".into(),
        ),
        (
            child(5, &|c| c.mode = Mode::ReadWriteDirect),
            "mode read_write_direct is higher than the parent's mode read_write_overlay".into(),
        ),
        (
            child(6, &|c| c.write_prefixes = vec!["src/../.github/".into()]),
            "write prefix src/../.github/ is invalid".into(),
        ),
        (
            child(7, &|c| c.expires_at = p.expires_at + 3600),
            "after the parent".into(),
        ),
    ];
    let mp = env.mountpoint("mnt");
    let before = sessions(&env);
    for (i, (t, want)) in cases.iter().enumerate() {
        let err = refused(&env, &mount_args(&env, t, "sub", &mp));
        let id = new_id(i as u64 + 1);
        assert!(
            err.contains(&format!(
                "grant token {id} widens its parent {}",
                p.grant_id
            )),
            "{err}"
        );
        assert!(err.contains(want.as_str()), "{want}: {err}");
        assert!(!is_mounted(&mp));
    }
    // `run --token` refuses it too, and runs nothing.
    let marker = env.dir.path().join("ran");
    let script = format!(
        "mkdir -p .github/workflows && echo pwned > .github/workflows/ci.yml; touch {}",
        s(&marker)
    );
    let err = refused(
        &env,
        &[
            "run",
            "--token",
            &github,
            "--root",
            s(&env.host),
            "--audience",
            "sub",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(
        err.contains("widens its parent") && err.contains(".github/"),
        "{err}"
    );
    assert!(!marker.exists(), "the command ran");
    assert_eq!(sessions(&env), before, "no grant was recorded");
    assert_eq!(
        fs::read_to_string(env.host.join(".github/workflows/ci.yml")).unwrap(),
        "original\n"
    );

    // The same child within the parent mounts: the refusals above are
    // about the widening, not the forging.
    let fine = child(8, &|c| c.write_prefixes = vec!["src/gen/".into()]);
    let gid = ok(&env, &mount_args(&env, &fine, "sub", &mp));
    let m = Mounted::new(mp.clone(), env.daemon_pid(&gid));
    assert_eq!(
        list_tree(&mp),
        ["src", "src/app", "src/app/main.py", "src/lib.py"]
    );
    drop(m);

    // A chain this state dir has never seen: the parent minted elsewhere.
    let mut elsewhere = p.clone();
    elsewhere.grant_id = new_id(100);
    let elsewhere_token = forge(&elsewhere);
    let orphan = {
        let mut c = p.clone();
        c.grant_id = new_id(101);
        c.audience = "sub".into();
        c.parent_grant_id = Some(elsewhere.grant_id.clone());
        c.delegation_depth = 1;
        c.write_prefixes = vec!["src/gen/".into()];
        forge(&c)
    };
    let wide_orphan = {
        let mut c = claims(&orphan);
        c.grant_id = new_id(102);
        c.write_prefixes = vec![".github/".into()];
        forge(&c)
    };
    let before = sessions(&env);
    let err = refused(&env, &mount_args(&env, &orphan, "sub", &mp));
    assert!(
        err.contains(&format!(
            "is delegated (depth 1) from {}, which is not known here",
            elsewhere.grant_id
        )) && err.contains("wopfs token import"),
        "{err}"
    );
    assert!(!is_mounted(&mp));
    // Importing a widened child is refused as its mount would be.
    let err = refused(&env, &["token", "import", &elsewhere_token, &wide_orphan]);
    assert!(
        err.contains(&format!(
            "grant token {} widens its parent {}",
            new_id(102),
            elsewhere.grant_id
        )),
        "{err}"
    );
    // All or nothing: the parent given with it was not remembered either.
    let err = refused(&env, &mount_args(&env, &orphan, "sub", &mp));
    assert!(err.contains("which is not known here"), "{err}");
    assert_eq!(sessions(&env), before);
    // Once the operator imports the parent (its claims, not the token),
    // its narrow child mounts and its wide one is still refused.
    let out = ok(&env, &["token", "import", &elsewhere_token]);
    assert!(out.contains(&elsewhere.grant_id), "{out}");
    let err = refused(&env, &mount_args(&env, &wide_orphan, "sub", &mp));
    assert!(
        err.contains("write prefix .github/ is outside the parent's write scope"),
        "{err}"
    );
    let gid = ok(&env, &mount_args(&env, &orphan, "sub", &mp));
    let m = Mounted::new(mp.clone(), env.daemon_pid(&gid));
    assert!(m.path("src/lib.py").exists());
    drop(m);
    // A record edited on disk is refused, not trusted.
    let dir = env.state.join("tokens");
    for e in fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        if text.contains(&elsewhere.grant_id) && text.contains("\"delegation_depth\":0") {
            fs::write(&path, text.replace("src/**", "**")).unwrap();
        }
    }
    let err = refused(&env, &mount_args(&env, &orphan, "sub", &mp));
    assert!(err.contains("has been tampered with"), "{err}");
    assert!(!is_mounted(&mp));
}

// ---------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------

/// The API's policy: reasons required, `.env` denied, root approves.
const POLICY: &str = "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000000\n\
     allowed_modes = [\"read_only\", \"read_write_overlay\"]\nrequire_reason = true\n\
     deny_patterns = [\"**/.env\"]\napprover_uids = [0]\n";

fn start_server(env: &Env) -> Server {
    Server::start(env, "wopfs.sock", POLICY, &[])
}

/// One POST; returns (status, body as JSON).
fn post(socket: &Path, path: &str, body: Value) -> (u16, Value) {
    let (status, body) = http(socket, "POST", path, body.to_string().as_bytes());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn api_delegation_never_widens_and_carries_the_trees_bucket() {
    let env = Env::new();
    tree(&env);
    ok(&env, &["bucket", "set", "payments", s(&env.host)]);
    let server = start_server(&env);
    let (st, grant) = post(
        &server.socket,
        "/v1/request_access",
        json!({"files": ["src/lib.py"], "mode": "read_write_overlay", "reason": "fix f"}),
    );
    assert_eq!(st, 200, "{grant}");
    let gid = grant["grant_id"].as_str().unwrap().to_string();
    let before = sessions(&env);
    let scope = "the parent has no write prefixes, so it may create files only where its allow patterns match (src/lib.py)";
    let cases = [
        (
            json!({"outputs_prefix": "tests"}),
            "write prefix tests/ is outside the parent's write scope",
        ),
        (
            json!({"outputs_prefix": ".github/workflows"}),
            "write prefix .github/workflows/ is outside the parent's write scope",
        ),
        (
            json!({"outputs_prefix": "src"}),
            "write prefix src/ is outside the parent's write scope",
        ),
        (
            json!({"outputs_prefix": "src/lib.py"}),
            "write prefix src/lib.py/ is outside the parent's write scope",
        ),
        (json!({"outputs_prefix": "src/../tests"}), "invalid"),
        (
            json!({"allow_patterns": ["src/**"]}),
            "allow pattern src/** is not covered by the parent's patterns (src/lib.py)",
        ),
        (
            json!({"mode": "read_write_direct"}),
            "mode read_write_direct is higher than the parent's mode read_write_overlay",
        ),
    ];
    for (extra, want) in cases {
        let mut body = json!({"grant_id": gid, "audience": "sub"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (st, out) = post(&server.socket, "/v1/delegate", body);
        assert!(st == 403 || st == 400, "{extra}: {st} {out}");
        assert!(out.get("token").is_none(), "{out}");
        let err = out["error"].as_str().unwrap();
        assert!(err.contains(want), "{extra}: {err}");
        if want.contains("write scope") {
            assert!(err.contains(scope), "{err}");
        }
    }
    assert_eq!(sessions(&env), before);

    // Within the grant: accepted, for the tree's bucket, and it mounts.
    let (st, out) = post(
        &server.socket,
        "/v1/delegate",
        json!({"grant_id": gid, "audience": "reviewer", "mode": "read_only"}),
    );
    assert_eq!(st, 200, "{out}");
    let t = out["token"].as_str().unwrap();
    let c = claims(t);
    assert_eq!(c.bucket, "payments");
    assert_eq!(c.parent_grant_id.as_deref(), Some(gid.as_str()));
    let mp = env.mountpoint("mnt");
    let out = wopfs(&env, &mount_args(&env, t, "reviewer", &mp));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("bucket payments"), "{err}");
    let sub = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let m = Mounted::new(mp.clone(), env.daemon_pid(&sub));
    assert_eq!(list_tree(&mp), ["src", "src/lib.py"]);
    drop(m);
    // A forged child of the grant, wider than it, is refused at mount.
    let mut wide = c.clone();
    wide.grant_id = new_id(1);
    wide.mode = Mode::ReadWriteOverlay;
    wide.outputs_prefix = Some("tests".into());
    let before = sessions(&env);
    let err = refused(&env, &mount_args(&env, &forge(&wide), "reviewer", &mp));
    assert!(
        err.contains(&format!(
            "grant token {} widens its parent {gid}",
            new_id(1)
        )) && err.contains("write prefix tests/ is outside the parent's write scope"),
        "{err}"
    );
    assert!(!is_mounted(&mp));
    assert_eq!(sessions(&env), before);
    drop(server);
}

// ---------------------------------------------------------------------------
// Buckets
// ---------------------------------------------------------------------------

#[test]
fn a_tokens_bucket_binds_it_to_one_tree() {
    let env = Env::new();
    tree(&env);
    let billing = env.dir.path().canonicalize().unwrap().join("billing");
    let loose = env.dir.path().canonicalize().unwrap().join("loose");
    for d in [&billing, &loose] {
        fs::create_dir_all(d.join("src")).unwrap();
        fs::write(d.join("src/ledger.py"), "ledger = []\n").unwrap();
    }
    ok(&env, &["bucket", "set", "payments", s(&env.host)]);
    ok(&env, &["bucket", "set", "billing", s(&billing)]);
    ok(&env, &["bucket", "set", "billing", s(&billing)]); // again: no change
    let err = refused(&env, &["bucket", "set", "payments", s(&loose)]);
    assert!(err.contains("bucket payments is already the tree"), "{err}");
    let err = refused(&env, &["bucket", "set", "other", s(&billing)]);
    assert!(err.contains("is already bucket billing"), "{err}");
    let err = refused(&env, &["bucket", "set", "/srv/x", s(&loose)]);
    assert!(err.contains("invalid bucket name"), "{err}");
    let list: Value = serde_json::from_str(&ok(&env, &["bucket", "list", "--json"])).unwrap();
    assert_eq!(
        list,
        json!({"billing": s(&billing), "payments": s(&env.host)})
    );
    // `wopfs grant` shows the tree's bucket (null without one).
    let g: Value = serde_json::from_str(&ok(
        &env,
        &["grant", "--root", s(&env.host), "--purpose", "p", "--json"],
    ))
    .unwrap();
    assert_eq!(g["bucket"], "payments");
    let g: Value = serde_json::from_str(&ok(
        &env,
        &["grant", "--root", s(&loose), "--purpose", "p", "--json"],
    ))
    .unwrap();
    assert_eq!(g["bucket"], Value::Null);

    let t = mint(&env, "worker", &["--allow", "src/**"]);
    let id = claims(&t).grant_id;
    let mp = env.mountpoint("mnt");
    let before = sessions(&env);
    let at = |root: &Path| {
        vec![
            "mount".to_string(),
            "--token".into(),
            t.clone(),
            "--root".into(),
            s(root).into(),
            "--audience".into(),
            "worker".into(),
            s(&mp).into(),
        ]
    };
    let refused_at = |root: &Path| {
        let a = at(root);
        refused(&env, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Another tree, named: both names.
    let err = refused_at(&billing);
    assert!(
        err.contains(&format!(
            "grant token {id} is for bucket payments, but {} is bucket billing (bucket payments is the tree {})",
            s(&billing),
            s(&env.host)
        )),
        "{err}"
    );
    // A tree without a name.
    let err = refused_at(&loose);
    assert!(
        err.contains(&format!(
            "grant token {id} is for bucket payments, but {} has no bucket (bucket payments is the tree {})",
            s(&loose),
            s(&env.host)
        )),
        "{err}"
    );
    // `run --token` likewise, running nothing.
    let marker = env.dir.path().join("ran");
    let err = refused(
        &env,
        &[
            "run",
            "--token",
            &t,
            "--root",
            s(&billing),
            "--audience",
            "worker",
            "--",
            "touch",
            s(&marker),
        ],
    );
    assert!(
        err.contains("is for bucket payments") && err.contains("is bucket billing"),
        "{err}"
    );
    assert!(!marker.exists());
    assert!(!is_mounted(&mp));
    assert_eq!(sessions(&env), before);

    // Its own tree: mounted, and the bucket is said.
    let a = at(&env.host);
    let out = wopfs(&env, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let gid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        err.contains(&format!(
            "grant {gid} from the token: bucket payments, root {}",
            s(&env.host)
        )),
        "{err}"
    );
    let m = Mounted::new(mp.clone(), env.daemon_pid(&gid));
    assert!(m.path("src/lib.py").exists());
    drop(m);
    let log: Value = serde_json::from_str(&env.ok(&["audit", &gid, "--json"])).unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|r| r["operationType"] == "wopfs.grant.create"
                && r["details"]["bucket"] == "payments"),
        "{log}"
    );

    // Unnamed, the tree refuses the token and says how to name it.
    ok(&env, &["bucket", "unset", "payments"]);
    let before = sessions(&env);
    let err = refused_at(&env.host);
    assert!(
        err.contains(&format!(
            "grant token {id} is for bucket payments, but no bucket is configured for {root}: if that tree is bucket payments, run `wopfs bucket set payments {root}`",
            root = s(&env.host)
        )),
        "{err}"
    );
    assert!(!is_mounted(&mp));
    assert_eq!(sessions(&env), before);
    // A tree without a name accepts only tokens of its own path (what
    // `wopfs serve` issues for it).
    let mut own = claims(&t);
    own.bucket = s(&env.host).to_string();
    let gid = ok(&env, &mount_args(&env, &forge(&own), "worker", &mp));
    drop(Mounted::new(mp.clone(), env.daemon_pid(&gid)));
    own.bucket = s(&loose).to_string();
    let err = refused(&env, &mount_args(&env, &forge(&own), "worker", &mp));
    assert!(
        err.contains(&format!(
            "is for the tree {} (its bucket), not for {}",
            s(&loose),
            s(&env.host)
        )),
        "{err}"
    );
}
