//! Signed grant tokens: `wopfs token mint|delegate|verify` with keys made
//! here, the wire format (compact payload, canonical base64url, Ed25519),
//! every delegation rule, keys from the environment and PEM files, and
//! `wopfs mount|run --token`, which mount the view a token describes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use wopfs::clock::{Clock, SystemClock};
use wopfs::token::{self, Claims};

/// A key pair made for one test, written as base64 files.
struct Keys {
    sk: SigningKey,
    seed_b64: String,
    /// The 32-byte seed as base64.
    signing: PathBuf,
    /// The public key as base64.
    verifying: PathBuf,
}

fn keys(env: &Env, name: &str) -> Keys {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let sk = SigningKey::from_bytes(&seed);
    let signing = env.dir.path().join(format!("{name}.seed"));
    let verifying = env.dir.path().join(format!("{name}.pub"));
    let seed_b64 = STANDARD.encode(seed);
    fs::write(&signing, format!("{seed_b64}\n")).unwrap();
    fs::write(&verifying, STANDARD.encode(sk.verifying_key().to_bytes())).unwrap();
    Keys {
        sk,
        seed_b64,
        signing,
        verifying,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `wopfs ARGS…` with exactly these A2A key variables (none inherited).
fn wopfs_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = wopfs_command();
    cmd.arg("--state-dir")
        .arg(&env.state)
        .args(args)
        .env_remove("WOPFS_STATE_DIR")
        .env_remove(token::SIGNING_KEY_ENV)
        .env_remove(token::VERIFYING_KEY_ENV);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("running wopfs")
}

fn ok_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> String {
    let out = wopfs_with(env, args, vars);
    assert!(
        out.status.success(),
        "wopfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn fails_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> String {
    let out = wopfs_with(env, args, vars);
    assert!(
        !out.status.success(),
        "wopfs {args:?} should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "errors exit 1");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("wopfs: ") && err.trim_end().lines().count() == 1,
        "one sentence: {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `wopfs token mint --signing-key K ARGS…`
fn mint(env: &Env, k: &Keys, args: &[&str]) -> String {
    let mut a = vec!["token", "mint", "--signing-key", s(&k.signing)];
    a.extend_from_slice(args);
    let t = ok_with(env, &a, &[]);
    assert!(
        !t.contains('\n') && !t.contains(' '),
        "the token alone: {t:?}"
    );
    t
}

/// A standard root token: worker may read src/** and docs/*.md, write in src/out.
fn root_token(env: &Env, k: &Keys) -> String {
    mint(
        env,
        k,
        &[
            "--issuer",
            "main",
            "--audience",
            "worker",
            "--bucket",
            "user-42",
            "--allow",
            "src/**",
            "--allow",
            "docs/*.md",
            "--deny",
            "src/private/**",
            "--write-prefix",
            "src/out",
            "--mode",
            "read_write_overlay",
            "--ttl",
            "600",
        ],
    )
}

fn delegate(env: &Env, k: &Keys, parent: &str, args: &[&str]) -> Output {
    let mut a = vec!["token", "delegate", parent, "--signing-key", s(&k.signing)];
    a.extend_from_slice(args);
    wopfs_with(env, &a, &[])
}

fn delegate_ok(env: &Env, k: &Keys, parent: &str, args: &[&str]) -> String {
    let out = delegate(env, k, parent, args);
    assert!(
        out.status.success(),
        "delegate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn delegate_fails(env: &Env, k: &Keys, parent: &str, args: &[&str]) -> String {
    let out = delegate(env, k, parent, args);
    assert!(
        !out.status.success(),
        "delegate {args:?} should be refused; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `wopfs token verify TOKEN --json` with the key's public half.
fn verify_json(env: &Env, k: &Keys, t: &str) -> Value {
    let out = ok_with(
        env,
        &[
            "token",
            "verify",
            t,
            "--json",
            "--verifying-key",
            s(&k.verifying),
        ],
        &[],
    );
    serde_json::from_str(&out).unwrap()
}

fn verify_fails(env: &Env, k: &Keys, t: &str, extra: &[&str]) -> String {
    let mut a = vec!["token", "verify", t, "--verifying-key", s(&k.verifying)];
    a.extend_from_slice(extra);
    fails_with(env, &a, &[])
}

fn payload_text(t: &str) -> String {
    let p = t.split('.').next().unwrap();
    String::from_utf8(URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

/// Signs arbitrary payload bytes as a token, as a (possibly foreign) issuer would.
fn sign_raw(k: &Keys, payload: &[u8]) -> String {
    let sig = k.sk.sign(payload);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    )
}

/// Claims of a verified token, for forging variants signed by the same key.
fn claims(k: &Keys, t: &str) -> Claims {
    token::verify(t, &k.sk.verifying_key(), None, &SystemClock).unwrap()
}

fn now() -> u64 {
    SystemClock.unix_secs()
}

#[test]
fn mint_verify_round_trip() {
    let env = Env::new();
    let k = keys(&env, "k");
    let t = root_token(&env, &k);
    let c = verify_json(&env, &k, &t);
    assert_eq!(c["issuer"], "main");
    assert_eq!(c["audience"], "worker");
    assert_eq!(c["bucket"], "user-42");
    assert_eq!(c["mode"], "read_write_overlay");
    assert_eq!(c["allow_patterns"], json!(["src/**", "docs/*.md"]));
    assert_eq!(c["deny_patterns"], json!(["src/private/**"]));
    assert_eq!(c["write_prefixes"], json!(["src/out/"]));
    assert_eq!(c["outputs_prefix"], Value::Null);
    assert_eq!(c["parent_grant_id"], Value::Null);
    assert_eq!(c["delegation_depth"], 0);
    assert_eq!(c["max_delegation_depth"], 40);
    let id = c["grant_id"].as_str().unwrap();
    assert!(id.starts_with("g-") && id.len() == 18, "{id}");
    let (iat, exp) = (
        c["issued_at"].as_u64().unwrap(),
        c["expires_at"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
    assert!(iat.abs_diff(now()) <= 5);
    assert_eq!(c["nonce"].as_str().unwrap().len(), 16);

    // The readable summary, and the audience check when it matches.
    let text = ok_with(
        &env,
        &[
            "token",
            "verify",
            &t,
            "--audience",
            "worker",
            "--verifying-key",
            s(&k.verifying),
        ],
        &[],
    );
    assert!(
        text.starts_with(&format!("valid grant token {id}")),
        "{text}"
    );
    for want in [
        "main",
        "worker",
        "user-42",
        "read_write_overlay",
        "src/**, docs/*.md",
        "src/out/",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    // `-` reads the token from stdin.
    let mut child = wopfs_command()
        .args([
            "--state-dir",
            s(&env.state),
            "token",
            "verify",
            "-",
            "--json",
        ])
        .args(["--verifying-key", s(&k.verifying)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{t}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let c2: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c2["grant_id"], id);
    // Minting and delegating are in the audit log, which still verifies.
    let audit = env.ok(&["audit", "--json"]);
    assert!(audit.contains("wopfs.token.mint"), "{audit}");
    env.ok(&["audit", "--verify"]);
}

#[test]
fn payload_is_compact_json_with_the_a2a_fields_in_order() {
    let env = Env::new();
    let k = keys(&env, "k");
    let t = mint(
        &env,
        &k,
        &[
            "--issuer",
            "main",
            "--audience",
            "worker",
            "--bucket",
            "b",
            "--outputs-prefix",
            "out",
            "--write-prefix",
            "/src/gen/",
            "--write-prefix",
            "out/",
        ],
    );
    let text = payload_text(&t);
    assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
    assert!(!text.contains(": ") && !text.contains(", ") && !text.contains('\n'));
    let fields = [
        "grant_id",
        "issuer",
        "audience",
        "bucket",
        "mode",
        "allow_patterns",
        "deny_patterns",
        "outputs_prefix",
        "write_prefixes",
        "parent_grant_id",
        "delegation_depth",
        "max_delegation_depth",
        "expires_at",
        "issued_at",
        "nonce",
    ];
    let at: Vec<usize> = fields
        .iter()
        .map(|f| {
            text.find(&format!("\"{f}\":"))
                .unwrap_or_else(|| panic!("{f} missing from {text}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "field order: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_object().unwrap().len(), fields.len(), "{text}");
    assert_eq!(v["mode"], "read_only");
    assert_eq!(v["allow_patterns"], json!(["**"]));
    assert_eq!(v["deny_patterns"], json!([]));
    assert_eq!(v["outputs_prefix"], "out");
    // Normalized: trailing slash, outputs_prefix first, no duplicates.
    assert_eq!(v["write_prefixes"], json!(["out/", "src/gen/"]));
    assert_eq!(
        v["expires_at"].as_u64().unwrap() - v["issued_at"].as_u64().unwrap(),
        300
    );
    // The signature is Ed25519 over exactly these bytes.
    let sig = URL_SAFE_NO_PAD
        .decode(t.split('.').nth(1).unwrap())
        .unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    k.sk.verifying_key()
        .verify_strict(text.as_bytes(), &sig)
        .unwrap();
}

#[test]
fn non_canonical_encodings_are_refused() {
    let env = Env::new();
    let k = keys(&env, "k");
    // A token whose text holds a base64url-only character, so that the
    // standard alphabet spells it differently.
    let t = (0..64)
        .map(|_| root_token(&env, &k))
        .find(|t| t.contains(['-', '_']))
        .expect("a token with - or _");
    verify_json(&env, &k, &t);
    let (p, sig) = t.split_once('.').unwrap();
    let std_alphabet = t.replace('-', "+").replace('_', "/");
    let mut cases: Vec<(String, &str)> = vec![
        (format!("{p}=.{sig}"), "canonical base64url"),
        (format!("{p}.{sig}=="), "canonical base64url"),
        (format!("{p}==.{sig}"), "canonical base64url"),
        (std_alphabet, "canonical base64url"),
        (format!("{p}.{sig}.x"), "malformed"),
        (format!("{p}.{}", &sig[1..]), "signature"),
        (format!("{p} .{sig}"), "canonical base64url"),
    ];
    // Non-zero trailing bits: 64 signature bytes leave 4 unused bits in
    // the last character; setting one decodes to the same bytes leniently.
    let last = sig.chars().last().unwrap();
    let alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = alpha.find(last).unwrap();
    let bumped = alpha.as_bytes()[v | 1] as char;
    assert_ne!(bumped, last);
    cases.push((
        format!("{p}.{}{bumped}", &sig[..sig.len() - 1]),
        "canonical base64url",
    ));
    // A flipped signature bit.
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[17] ^= 0x01;
    cases.push((
        format!("{p}.{}", URL_SAFE_NO_PAD.encode(&raw)),
        "does not verify",
    ));
    // An edited payload (more power), keeping the signature.
    let edited = payload_text(&t).replace("read_write_overlay", "read_write_direct");
    cases.push((
        format!("{}.{sig}", URL_SAFE_NO_PAD.encode(edited)),
        "does not verify",
    ));
    // The same bytes, re-encoded with padding or the standard alphabet.
    let bytes = URL_SAFE_NO_PAD.decode(p).unwrap();
    cases.push((format!("{}.{sig}", URL_SAFE.encode(&bytes)), ""));
    cases.push((format!("{}.{sig}", STANDARD_NO_PAD.encode(&bytes)), ""));
    for (bad, want) in cases {
        if bad == t {
            continue; // that re-encoding happened to be the canonical one
        }
        let err = verify_fails(&env, &k, &bad, &[]);
        assert!(err.contains(want), "{bad}: {err}");
    }
}

#[test]
fn unknown_fields_are_refused_and_a2a_fields_carried() {
    let env = Env::new();
    let k = keys(&env, "k");
    let t = root_token(&env, &k);
    let mut v: Value = serde_json::from_str(&payload_text(&t)).unwrap();
    v["admin"] = json!(true);
    let forged = sign_raw(&k, &serde_json::to_vec(&v).unwrap());
    let err = verify_fails(&env, &k, &forged, &[]);
    assert!(
        err.contains("unknown field") && err.contains("admin"),
        "{err}"
    );

    // The a2a format's other fields are kept, verbatim, and into children.
    let mut v: Value = serde_json::from_str(&payload_text(&t)).unwrap();
    v.as_object_mut().unwrap().extend([
        ("llm_models".to_string(), json!(["model-a", "model-b"])),
        ("llm_max_budget_usd".to_string(), json!(2.5)),
        ("llm_rpm_limit".to_string(), json!(60)),
        ("llm_tpm_limit".to_string(), Value::Null),
        (
            "source_grants".to_string(),
            json!([{"agent": "repo-agent", "scope": "read"}]),
        ),
    ]);
    let parent = sign_raw(&k, &serde_json::to_vec(&v).unwrap());
    let c = verify_json(&env, &k, &parent);
    assert_eq!(c["llm_models"], json!(["model-a", "model-b"]));
    assert_eq!(c["source_grants"][0]["agent"], "repo-agent");
    let child = delegate_ok(&env, &k, &parent, &["--audience", "sub"]);
    let cc = verify_json(&env, &k, &child);
    for f in [
        "llm_models",
        "llm_max_budget_usd",
        "llm_rpm_limit",
        "llm_tpm_limit",
        "source_grants",
    ] {
        assert_eq!(cc[f], v[f], "{f} carried");
    }
    let text = payload_text(&child);
    assert!(
        text.contains(r#""llm_models":["model-a","model-b"]"#)
            && text.contains(r#""llm_max_budget_usd":2.5"#)
            && text.contains(r#""source_grants":[{"agent":"repo-agent","scope":"read"}]"#),
        "{text}"
    );
}

#[test]
fn delegation_narrows_and_names_each_violation() {
    let env = Env::new();
    let k = keys(&env, "k");
    let parent = root_token(&env, &k);
    let p = verify_json(&env, &k, &parent);

    // A plain delegation inherits the parent's bounds.
    let child = delegate_ok(&env, &k, &parent, &["--audience", "sub"]);
    let c = verify_json(&env, &k, &child);
    assert_eq!(c["issuer"], "worker", "issued by the parent's audience");
    assert_eq!(c["audience"], "sub");
    assert_eq!(c["bucket"], "user-42");
    assert_eq!(c["parent_grant_id"], p["grant_id"]);
    assert_ne!(c["grant_id"], p["grant_id"]);
    assert_ne!(c["nonce"], p["nonce"]);
    assert!(c["grant_id"].as_str().unwrap().starts_with("g-"));
    assert_eq!(c["delegation_depth"], 1);
    assert_eq!(c["max_delegation_depth"], 40);
    assert_eq!(c["mode"], p["mode"]);
    assert_eq!(c["allow_patterns"], p["allow_patterns"]);
    assert_eq!(c["write_prefixes"], json!(["src/out/"]));
    assert_eq!(c["expires_at"], p["expires_at"]);

    // Narrower requests are accepted.
    let narrow = delegate_ok(
        &env,
        &k,
        &parent,
        &[
            "--audience",
            "sub",
            "--allow",
            "src/app/*.py",
            "--allow",
            "docs/*.md",
            "--write-prefix",
            "src/out/gen",
            "--mode",
            "read_only",
            "--deny",
            "**/*.key",
            "--deny",
            "src/private/**",
        ],
    );
    let n = verify_json(&env, &k, &narrow);
    assert_eq!(n["allow_patterns"], json!(["src/app/*.py", "docs/*.md"]));
    assert_eq!(n["write_prefixes"], json!(["src/out/gen/"]));
    assert_eq!(n["mode"], "read_only");
    // Deny patterns: the parent's, then the child's, without duplicates.
    assert_eq!(n["deny_patterns"], json!(["src/private/**", "**/*.key"]));

    // Each violation is refused by name.
    let cases: &[(&[&str], &str)] = &[
        (
            &["--mode", "read_write_direct"],
            "mode read_write_direct is higher than the parent's mode read_write_overlay",
        ),
        (
            &["--allow", "lib/**"],
            "allow pattern lib/** is not covered by the parent's patterns",
        ),
        (
            &["--allow", "docs/**"],
            "allow pattern docs/** is not covered by the parent's patterns",
        ),
        (
            &["--allow", "**"],
            "allow pattern ** is not covered by the parent's patterns",
        ),
        (
            &["--write-prefix", "lib"],
            "write prefix lib/ is outside the parent's write prefixes (src/out/)",
        ),
        (
            &["--write-prefix", "src/outer"],
            "write prefix src/outer/ is outside the parent's write prefixes",
        ),
        (
            &["--outputs-prefix", "results"],
            "write prefix results/ is outside the parent's write prefixes",
        ),
        (
            &["--bucket", "user-43"],
            "bucket user-43 differs from the parent's bucket user-42",
        ),
        (&["--audience", ""], "--audience must not be empty"),
        (&["--ttl", "0"], "--ttl must be at least 1 second"),
    ];
    for (args, want) in cases {
        let mut a: Vec<&str> = args.to_vec();
        if !a.contains(&"--audience") {
            a.extend(["--audience", "sub"]);
        }
        let err = delegate_fails(&env, &k, &parent, &a);
        assert!(err.contains(want), "{args:?}: {err}");
    }

    // A read-only child cannot re-escalate its own children.
    let ro = delegate_ok(
        &env,
        &k,
        &parent,
        &["--audience", "sub", "--mode", "read_only"],
    );
    let err = delegate_fails(
        &env,
        &k,
        &ro,
        &["--audience", "subsub", "--mode", "read_write_overlay"],
    );
    assert!(
        err.contains("higher than the parent's mode read_only"),
        "{err}"
    );
    // A child narrowed to src/app/** cannot widen back to src/**.
    let app = delegate_ok(
        &env,
        &k,
        &parent,
        &["--audience", "sub", "--allow", "src/app/**"],
    );
    let err = delegate_fails(&env, &k, &app, &["--audience", "x", "--allow", "src/**"]);
    assert!(err.contains("allow pattern src/** is not covered"), "{err}");
}

#[test]
fn delegation_depth_and_bucket_with_forged_parents() {
    let env = Env::new();
    let k = keys(&env, "k");
    let base = claims(&k, &root_token(&env, &k));

    // A parent one step below its max may delegate once more, not twice.
    let mut near = base.clone();
    near.delegation_depth = 1;
    near.max_delegation_depth = 2;
    let near = token::encode(&k.sk, &near).unwrap();
    let child = delegate_ok(&env, &k, &near, &["--audience", "sub"]);
    let c = verify_json(&env, &k, &child);
    assert_eq!(c["delegation_depth"], 2);
    assert_eq!(c["max_delegation_depth"], 2);
    let err = delegate_fails(&env, &k, &child, &["--audience", "x"]);
    assert!(
        err.contains("delegation depth 3 would exceed the parent's max_delegation_depth 2"),
        "{err}"
    );

    // A parent of another bucket: the child keeps the parent's bucket and
    // asking for any other is refused.
    let mut other = base.clone();
    other.bucket = "user-99".into();
    let other = token::encode(&k.sk, &other).unwrap();
    let c = verify_json(
        &env,
        &k,
        &delegate_ok(&env, &k, &other, &["--audience", "sub"]),
    );
    assert_eq!(c["bucket"], "user-99");
    let err = delegate_fails(
        &env,
        &k,
        &other,
        &["--audience", "sub", "--bucket", "user-42"],
    );
    assert!(
        err.contains("bucket user-42 differs from the parent's bucket user-99"),
        "{err}"
    );

    // A parent without write prefixes creates only where its allow
    // patterns (src/**, docs/*.md) match: a child may set prefixes only
    // there.
    let mut open = base.clone();
    open.write_prefixes.clear();
    let open = token::encode(&k.sk, &open).unwrap();
    let c = verify_json(
        &env,
        &k,
        &delegate_ok(
            &env,
            &k,
            &open,
            &["--audience", "sub", "--write-prefix", "src/gen"],
        ),
    );
    assert_eq!(c["write_prefixes"], json!(["src/gen/"]));
    for bad in ["anywhere", "docs", ".github"] {
        let err = delegate_fails(
            &env,
            &k,
            &open,
            &["--audience", "sub", "--write-prefix", bad],
        );
        assert!(
            err.contains(&format!(
                "write prefix {bad}/ is outside the parent's write scope"
            )),
            "{err}"
        );
    }

    // A parent signed by another key is refused before anything else.
    let k2 = keys(&env, "k2");
    let foreign = token::encode(&k2.sk, &base).unwrap();
    let err = delegate_fails(&env, &k, &foreign, &["--audience", "sub"]);
    assert!(
        err.contains("parent token is refused") && err.contains("does not verify"),
        "{err}"
    );
}

#[test]
fn delegation_ttl_is_clamped_to_the_parent() {
    let env = Env::new();
    let k = keys(&env, "k");
    let parent = root_token(&env, &k);
    let p_exp = verify_json(&env, &k, &parent)["expires_at"]
        .as_u64()
        .unwrap();
    let long = delegate_ok(&env, &k, &parent, &["--audience", "sub", "--ttl", "86400"]);
    assert_eq!(
        verify_json(&env, &k, &long)["expires_at"].as_u64().unwrap(),
        p_exp
    );
    let long = delegate_ok(&env, &k, &parent, &["--audience", "sub", "--ttl", "2h"]);
    assert_eq!(
        verify_json(&env, &k, &long)["expires_at"].as_u64().unwrap(),
        p_exp
    );
    let before = now();
    let short = delegate_ok(&env, &k, &parent, &["--audience", "sub", "--ttl", "60"]);
    let c = verify_json(&env, &k, &short);
    let exp = c["expires_at"].as_u64().unwrap();
    // Counted from the next whole second: at least 60 s, at most 61.
    assert!(
        exp >= before + 60 && exp <= now() + 61 && exp < p_exp,
        "{exp}"
    );
    // The grandchild cannot outlive the child either.
    let gc = delegate_ok(&env, &k, &short, &["--audience", "x", "--ttl", "600"]);
    assert_eq!(
        verify_json(&env, &k, &gc)["expires_at"].as_u64().unwrap(),
        exp
    );
}

#[test]
fn expired_tokens_are_refused() {
    let env = Env::new();
    let k = keys(&env, "k");
    let mut c = claims(&k, &root_token(&env, &k));
    c.issued_at = now() - 100;
    c.expires_at = now() - 10;
    let expired = token::encode(&k.sk, &c).unwrap();
    let err = verify_fails(&env, &k, &expired, &[]);
    assert!(
        err.contains(&format!("grant token {} expired at", c.grant_id)),
        "{err}"
    );
    assert!(err.contains(&c.expires_at.to_string()), "{err}");
    let err = delegate_fails(&env, &k, &expired, &["--audience", "sub"]);
    assert!(err.contains("expired at"), "{err}");
    // Expiry is inclusive: a token is dead at its expires_at second.
    c.expires_at = now();
    let err = verify_fails(&env, &k, &token::encode(&k.sk, &c).unwrap(), &[]);
    assert!(err.contains("expired at"), "{err}");
    // And a real one-second token dies on its own (by the system clock;
    // the unit tests check the instant on a manual one).
    let t = mint(
        &env,
        &k,
        &[
            "--issuer",
            "i",
            "--audience",
            "a",
            "--bucket",
            "b",
            "--ttl",
            "1",
        ],
    );
    wait_until(
        "the token to expire",
        std::time::Duration::from_secs(30),
        || {
            let args = ["token", "verify", &t, "--verifying-key", s(&k.verifying)];
            !wopfs_with(&env, &args, &[]).status.success()
        },
    );
    let err = verify_fails(&env, &k, &t, &[]);
    assert!(err.contains("expired at"), "{err}");
}

#[test]
fn wrong_audience_is_refused() {
    let env = Env::new();
    let k = keys(&env, "k");
    let t = root_token(&env, &k);
    let err = verify_fails(&env, &k, &t, &["--audience", "intruder"]);
    assert!(
        err.contains("is addressed to worker, not intruder"),
        "{err}"
    );
}

#[test]
fn unsigned_garbage_and_foreign_tokens_are_refused() {
    let env = Env::new();
    let k = keys(&env, "k");
    let t = root_token(&env, &k);
    let (p, _) = t.split_once('.').unwrap();
    let other = keys(&env, "other");
    let foreign = token::encode(&other.sk, &claims(&k, &t)).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("garbage".into(), "malformed"),
        (p.to_string(), "malformed"),
        (format!("{p}."), "unsigned"),
        (".".into(), "unsigned"),
        (format!("{p}.AAAA"), "signature is 3 bytes"),
        (
            format!("{}.{}", URL_SAFE_NO_PAD.encode("not json"), "x"),
            "",
        ),
        (foreign, "does not verify"),
    ];
    for (bad, want) in cases {
        let err = verify_fails(&env, &k, &bad, &[]);
        assert!(err.contains(want), "{bad}: {err}");
    }
    // A validly signed payload that is not a grant.
    let err = verify_fails(&env, &k, &sign_raw(&k, b"[1,2]"), &[]);
    assert!(err.contains("payload is invalid"), "{err}");
    let err = verify_fails(&env, &k, &sign_raw(&k, br#"{"grant_id":"g-1"}"#), &[]);
    assert!(
        err.contains("payload is invalid") && err.contains("issuer"),
        "{err}"
    );
    // No key at all.
    let err = fails_with(&env, &["token", "verify", &t], &[]);
    assert!(
        err.contains("no verifying key") && err.contains("A2A_GRANT_VERIFYING_KEY"),
        "{err}"
    );
    let err = fails_with(
        &env,
        &[
            "token",
            "mint",
            "--issuer",
            "i",
            "--audience",
            "a",
            "--bucket",
            "b",
        ],
        &[],
    );
    assert!(
        err.contains("no signing key") && err.contains("A2A_GRANT_SIGNING_KEY"),
        "{err}"
    );
}

#[test]
fn keys_from_the_environment() {
    let env = Env::new();
    let k = keys(&env, "k");
    let seed = STANDARD.decode(&k.seed_b64).unwrap();
    let public = k.sk.verifying_key().to_bytes();
    let mint_args = [
        "token",
        "mint",
        "--issuer",
        "i",
        "--audience",
        "a",
        "--bucket",
        "b",
    ];
    let signing_forms = [
        STANDARD.encode(&seed),
        URL_SAFE_NO_PAD.encode(&seed),
        URL_SAFE.encode(&seed),
        format!("base64:{}", STANDARD.encode(&seed)),
        format!("  base64:{}\n", URL_SAFE_NO_PAD.encode(&seed)),
        STANDARD.encode(k.sk.to_keypair_bytes()),
    ];
    for form in &signing_forms {
        let t = ok_with(&env, &mint_args, &[(token::SIGNING_KEY_ENV, form)]);
        // Verified with the public key file, so every form is the same key.
        verify_json(&env, &k, &t);
        // Only a signing key in the environment: the verifying key is derived.
        ok_with(
            &env,
            &["token", "verify", &t],
            &[(token::SIGNING_KEY_ENV, form)],
        );
    }
    let t = mint(
        &env,
        &k,
        &["--issuer", "i", "--audience", "a", "--bucket", "b"],
    );
    for form in [
        STANDARD.encode(public),
        URL_SAFE_NO_PAD.encode(public),
        format!("base64:{}", URL_SAFE.encode(public)),
    ] {
        ok_with(
            &env,
            &["token", "verify", &t],
            &[(token::VERIFYING_KEY_ENV, &form)],
        );
    }
    // The verifying key wins over the signing key: another key refuses.
    let other = keys(&env, "other");
    let other_pub = STANDARD.encode(other.sk.verifying_key().to_bytes());
    let err = fails_with(
        &env,
        &["token", "verify", &t],
        &[
            (token::VERIFYING_KEY_ENV, &other_pub),
            (token::SIGNING_KEY_ENV, &k.seed_b64),
        ],
    );
    assert!(err.contains("does not verify"), "{err}");
    // Delegation from the environment alone.
    let child = ok_with(
        &env,
        &["token", "delegate", &t, "--audience", "sub"],
        &[(token::SIGNING_KEY_ENV, &k.seed_b64)],
    );
    verify_json(&env, &k, &child);
    // Bad key material is named by its source.
    let err = fails_with(
        &env,
        &mint_args,
        &[(token::SIGNING_KEY_ENV, &STANDARD.encode([1u8; 31]))],
    );
    assert!(
        err.contains("A2A_GRANT_SIGNING_KEY") && err.contains("31 bytes"),
        "{err}"
    );
    let err = fails_with(&env, &mint_args, &[(token::SIGNING_KEY_ENV, "not a key!")]);
    assert!(err.contains("A2A_GRANT_SIGNING_KEY is invalid"), "{err}");
    let err = fails_with(
        &env,
        &["token", "verify", &t],
        &[(token::VERIFYING_KEY_ENV, "c2hvcnQ")],
    );
    assert!(
        err.contains("A2A_GRANT_VERIFYING_KEY") && err.contains("5 bytes"),
        "{err}"
    );
    let missing = env.dir.path().join("missing.key");
    let err = fails_with(
        &env,
        &["token", "verify", &t, "--verifying-key", s(&missing)],
        &[],
    );
    assert!(err.contains(s(&missing)), "{err}");
}

#[test]
fn keys_from_pem_files() {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
    let env = Env::new();
    let k = keys(&env, "k");
    let sk_pem = env.dir.path().join("k.pem");
    let pk_pem = env.dir.path().join("k.pub.pem");
    fs::write(
        &sk_pem,
        k.sk.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    fs::write(
        &pk_pem,
        k.sk.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    assert!(fs::read_to_string(&sk_pem)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    let t = ok_with(
        &env,
        &[
            "token",
            "mint",
            "--issuer",
            "i",
            "--audience",
            "a",
            "--bucket",
            "b",
            "--signing-key",
            s(&sk_pem),
        ],
        &[],
    );
    verify_json(&env, &k, &t);
    ok_with(
        &env,
        &["token", "verify", &t, "--verifying-key", s(&pk_pem)],
        &[],
    );
    // PEM in the environment too.
    let pem = fs::read_to_string(&pk_pem).unwrap();
    ok_with(
        &env,
        &["token", "verify", &t],
        &[(token::VERIFYING_KEY_ENV, &pem)],
    );
    let pem = fs::read_to_string(&sk_pem).unwrap();
    ok_with(
        &env,
        &["token", "verify", &t],
        &[(token::SIGNING_KEY_ENV, &pem)],
    );
    // A private key where a public one belongs is refused by name.
    let err = fails_with(
        &env,
        &["token", "verify", &t, "--verifying-key", s(&sk_pem)],
        &[],
    );
    assert!(err.contains("k.pem") && err.contains("SPKI"), "{err}");
}

// ---------------------------------------------------------------------------
// Mounting by token
// ---------------------------------------------------------------------------

fn sessions(env: &Env) -> usize {
    fs::read_dir(env.state.join("sessions")).map_or(0, |d| d.count())
}

/// The tokens' tree, named bucket user-42 (as the tokens say).
fn host_tree(env: &Env) {
    env.ok(&["bucket", "set", "user-42", s(&env.host)]);
    env.write("src/app/main.py", "print('main')\n");
    env.write("src/app/util.py", "def f(): pass\n");
    env.write("src/private/notes.md", "private\n");
    env.write("src/out/.keep", "");
    env.write("src/.env", "TOKEN=1\n");
    env.write("docs/guide.md", "# guide\n");
    env.write("README.md", "readme\n");
    env.write(".env", "SECRET=1\n");
}

fn token_mount_args<'a>(env: &'a Env, k: &'a Keys, t: &'a str, mp: &'a Path) -> Vec<&'a str> {
    vec![
        "mount",
        "--token",
        t,
        "--root",
        s(&env.host),
        "--audience",
        "worker",
        "--verifying-key",
        s(&k.verifying),
        s(mp),
    ]
}

#[test]
fn mount_by_token_shows_the_tokens_view() {
    let env = Env::new();
    host_tree(&env);
    let k = keys(&env, "k");
    let t = mint(
        &env,
        &k,
        &[
            "--issuer",
            "main",
            "--audience",
            "worker",
            "--bucket",
            "user-42",
            "--allow",
            "src/**",
            "--allow",
            "docs/*.md",
            "--deny",
            "src/private/**",
            "--write-prefix",
            "src/out",
            "--mode",
            "read_write_overlay",
            "--ttl",
            "600",
        ],
    );
    let exp = claims(&k, &t).expires_at;
    let mp = env.mountpoint("mnt");
    let gid = env.ok(&token_mount_args(&env, &k, &t, &mp));
    assert!(gid.starts_with("g-") && gid.len() == 18, "{gid:?}");
    let m = Mounted::new(mp.clone(), env.daemon_pid(&gid));
    assert!(is_mounted(&mp));

    assert_eq!(
        fs::read_to_string(m.path("src/app/main.py")).unwrap(),
        "print('main')\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("docs/guide.md")).unwrap(),
        "# guide\n"
    );
    // Denied by the token, outside its allow patterns, denied by the local policy.
    for hidden in [
        "src/private/notes.md",
        "src/private",
        "README.md",
        "src/.env",
        ".env",
    ] {
        assert_eq!(
            errno(fs::metadata(m.path(hidden))),
            libc::ENOENT,
            "{hidden}"
        );
    }
    assert_eq!(
        list_tree(&mp),
        [
            "docs",
            "docs/guide.md",
            "src",
            "src/app",
            "src/app/main.py",
            "src/app/util.py",
            "src/out",
            "src/out/.keep",
        ]
    );
    // Writable within the token's write prefix only.
    fs::write(m.path("src/out/result.txt"), "done\n").unwrap();
    assert_eq!(
        errno(fs::write(m.path("src/app/new.py"), "x")),
        libc::EACCES
    );

    // Recorded as a normal grant: the token's patterns, the policy's denies on top.
    let st: Value = serde_json::from_str(&env.ok(&["status", &gid, "--json"])).unwrap();
    assert_eq!(st[0]["mounted"], true);
    assert_eq!(st[0]["mode"], "read_write_overlay");
    let tid = claims(&k, &t).grant_id;
    assert_eq!(st[0]["purpose"], format!("token {tid} for worker"));
    let g: Value = serde_json::from_slice(
        &fs::read(env.state.join("sessions").join(&gid).join("grant.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(g["reason"], "delegated by main");
    assert_eq!(g["allow_patterns"], json!(["src/**", "docs/*.md"]));
    assert_eq!(g["deny_patterns"][0], "src/private/**");
    assert!(
        g["deny_patterns"].as_array().unwrap().len() > 1,
        "policy denies added"
    );
    assert_eq!(g["write_prefixes"], json!(["src/out"]));
    assert_eq!(
        g["expires_at"],
        token::unix_rfc3339(exp),
        "expires with the token"
    );
    let audit = env.ok(&["audit", &gid, "--json"]);
    assert!(
        audit.contains("granted from a token") && audit.contains(&tid),
        "{audit}"
    );

    drop(m);
    assert!(!is_mounted(&mp));
    // The session works like any other afterwards.
    let st = env.ok(&["status", &gid]);
    assert!(st.contains("src/out/result.txt"), "{st}");
    // And a plain grant still mounts by id.
    let g2 = env.grant(&["--allow", "docs/**"]);
    let mp2 = env.mountpoint("mnt2");
    let m2 = env.mount(&g2, &mp2, &[]);
    assert_eq!(list_tree(&mp2), ["docs", "docs/guide.md"]);
    drop(m2);
    assert!(!is_mounted(&mp2));
}

#[test]
fn mount_by_token_refuses_bad_tokens_and_records_nothing() {
    let env = Env::new();
    host_tree(&env);
    let k = keys(&env, "k");
    let t = root_token(&env, &k);
    let mp = env.mountpoint("mnt");
    let before = sessions(&env);

    let (p, sig) = t.split_once('.').unwrap();
    let edited = payload_text(&t).replace("src/private/**", "src/nothing/**");
    let tampered = format!("{}.{sig}", URL_SAFE_NO_PAD.encode(edited));
    let mut c = claims(&k, &t);
    c.expires_at = now() - 1;
    let expired = token::encode(&k.sk, &c).unwrap();
    let other = keys(&env, "other");
    let foreign = token::encode(&other.sk, &claims(&k, &t)).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (tampered, "does not verify"),
        (expired, "expired at"),
        (p.to_string(), "malformed"),
        (format!("{p}."), "unsigned"),
        (foreign, "does not verify"),
    ];
    for (bad, want) in &cases {
        let err = fails_with(&env, &token_mount_args(&env, &k, bad, &mp), &[]);
        assert!(err.contains(want), "{want}: {err}");
        assert!(!is_mounted(&mp));
    }
    // Addressed to someone else.
    let mut args = token_mount_args(&env, &k, &t, &mp);
    let i = args.iter().position(|a| *a == "worker").unwrap();
    args[i] = "intruder";
    let err = fails_with(&env, &args, &[]);
    assert!(err.contains("addressed to worker, not intruder"), "{err}");
    // The local policy still rules: direct mode is not in the default policy.
    let mut c = claims(&k, &t);
    c.mode = wopfs::policy::Mode::ReadWriteDirect;
    let direct = token::encode(&k.sk, &c).unwrap();
    let err = fails_with(&env, &token_mount_args(&env, &k, &direct, &mp), &[]);
    assert!(
        err.contains("mode read_write_direct is not allowed"),
        "{err}"
    );
    // Usage errors: both a grant and a token, neither, or a token without --root.
    let g = env.grant(&[]);
    let before_usage = sessions(&env);
    let err = fails_with(
        &env,
        &[
            "mount",
            &g,
            s(&mp),
            "--token",
            &t,
            "--root",
            s(&env.host),
            "--audience",
            "worker",
        ],
        &[],
    );
    assert!(err.contains("either a GRANT or --token"), "{err}");
    let err = fails_with(&env, &["mount", s(&mp)], &[]);
    assert!(err.contains("needs a GRANT and a MOUNTPOINT"), "{err}");
    let err = fails_with(
        &env,
        &[
            "mount",
            "--token",
            &t,
            "--verifying-key",
            s(&k.verifying),
            s(&mp),
        ],
        &[],
    );
    assert!(
        err.contains("--root") && err.contains("--audience"),
        "{err}"
    );
    // A mountpoint inside the host tree is refused before anything is recorded.
    let inside = env.host.join("docs");
    let err = fails_with(&env, &token_mount_args(&env, &k, &t, &inside), &[]);
    assert!(!err.is_empty());
    assert!(!is_mounted(&mp) && !is_mounted(&inside));
    assert_eq!(sessions(&env), before_usage);
    assert_eq!(
        before_usage,
        before + 1,
        "only the plain grant was recorded"
    );
}

#[test]
fn run_by_token() {
    let env = Env::new();
    host_tree(&env);
    let k = keys(&env, "k");
    let t = root_token(&env, &k);
    let at = env.dir.path().join("ws");
    let out = wopfs_with(
        &env,
        &[
            "run",
            "--token",
            &t,
            "--root",
            s(&env.host),
            "--audience",
            "worker",
            "--verifying-key",
            s(&k.verifying),
            "--at",
            s(&at),
            "--",
            "sh",
            "-c",
            "cat src/app/main.py; ls -a src; test ! -e .env && test ! -e src/private",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("print('main')\n"), "{stdout}");
    assert!(
        stdout.contains("app") && !stdout.contains("private"),
        "{stdout}"
    );
    assert!(!stdout.contains(".env"), "{stdout}");
    // A refused token runs nothing.
    let err = fails_with(
        &env,
        &[
            "run",
            "--token",
            &t,
            "--root",
            s(&env.host),
            "--audience",
            "intruder",
            "--verifying-key",
            s(&k.verifying),
            "--",
            "true",
        ],
        &[],
    );
    assert!(err.contains("addressed to worker, not intruder"), "{err}");
    assert_eq!(sessions(&env), 1);
}

#[test]
fn claims_extra_only_admits_a2a_fields() {
    let k = SigningKey::from_bytes(&[9u8; 32]);
    let now = now();
    let mut c = Claims {
        grant_id: "g-0000000000000000".into(),
        issuer: "i".into(),
        audience: "a".into(),
        bucket: "b".into(),
        mode: wopfs::policy::Mode::ReadOnly,
        allow_patterns: vec!["**".into()],
        deny_patterns: vec![],
        outputs_prefix: Some("out".into()),
        write_prefixes: vec![],
        parent_grant_id: None,
        delegation_depth: 0,
        max_delegation_depth: 40,
        expires_at: now + 60,
        issued_at: now,
        nonce: "00".into(),
        extra: BTreeMap::new(),
    };
    c.extra.insert("llm_x".into(), json!(1));
    let t = token::encode(&k, &c).unwrap();
    let back = token::verify(&t, &k.verifying_key(), Some("a"), &SystemClock).unwrap();
    assert_eq!(back.write_prefixes, vec!["out/".to_string()]);
    assert_eq!(back.extra["llm_x"], json!(1));
    c.extra.insert("root".into(), json!(true));
    let err = token::encode(&k, &c).unwrap_err().to_string();
    assert!(err.contains("unknown field \"root\""), "{err}");
}
