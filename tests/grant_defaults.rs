//! Secrets by default: what a grant (and intent search) leaves out without
//! being told: the built-in secret denies (kept by custom policies), what
//! `.gitignore` ignores, and files with other hard links where the policy
//! refuses them.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

fn grant_json(env: &Env, extra: &[&str]) -> Value {
    let out = env.grant(&[&["--json"], extra].concat());
    serde_json::from_str(&out).unwrap()
}

fn files(g: &Value) -> Vec<String> {
    g["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

fn policy(env: &Env, name: &str, extra: &str) -> String {
    let p = env.dir.path().join(name);
    fs::write(
        &p,
        format!(
            "enabled = true\nmax_files = 1000\nallowed_modes = [\"read_only\"]\n\
             require_reason = false\n{extra}"
        ),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

fn secrets(env: &Env) {
    env.write("src/app.py", "print(1)\n");
    env.write(".env", "SECRET=1\n");
    env.write("config/.env.production", "SECRET=2\n");
    env.write("deploy/id_rsa", "key\n");
    env.write(".git/config", "[core]\n");
    env.write(".git/HEAD", "ref: refs/heads/main\n");
    env.write(".aws/credentials", "[default]\n");
}

#[test]
fn a_custom_policy_without_denies_keeps_the_builtin_secret_denies() {
    let env = Env::new();
    secrets(&env);
    let p = policy(&env, "custom.toml", "");
    let g = grant_json(&env, &["--policy", &p]);
    assert_eq!(files(&g), vec!["src/app.py"]);
    let deny = g["deny_patterns"].as_array().unwrap();
    for d in ["**/.git", "**/.env", "**/id_rsa*", "**/.aws"] {
        assert!(deny.iter().any(|x| x == d), "{d} missing from {deny:?}");
    }
    // Its own patterns add to them.
    env.write("src/private/notes.md", "n\n");
    let p = policy(&env, "more.toml", "deny_patterns = [\"src/private/**\"]\n");
    let g = grant_json(&env, &["--policy", &p]);
    assert_eq!(files(&g), vec!["src/app.py"]);
}

#[test]
fn a_policy_can_opt_out_of_the_builtin_denies() {
    let env = Env::new();
    secrets(&env);
    let p = policy(&env, "open.toml", "inherit_default_denies = false\n");
    let g = grant_json(&env, &["--policy", &p]);
    assert_eq!(
        files(&g),
        vec![
            ".aws/credentials",
            ".env",
            ".git/HEAD",
            ".git/config",
            "config/.env.production",
            "deploy/id_rsa",
            "src/app.py",
        ]
    );
    assert_eq!(g["deny_patterns"], serde_json::json!([]));
    let p = policy(
        &env,
        "some.toml",
        "inherit_default_denies = false\ndeny_patterns = [\"**/.env\"]\n",
    );
    let g = grant_json(&env, &["--policy", &p]);
    let f = files(&g);
    assert!(f.contains(&".git/config".to_string()), "{f:?}");
    assert!(!f.contains(&".env".to_string()), "{f:?}");
}

fn project(env: &Env) {
    env.write(".gitignore", "node_modules/\ntarget/\n*.log\n!keep.log\n");
    env.write("src/main.rs", "fn main() {}\n");
    env.write("src/debug.log", "noise\n");
    env.write("src/keep.log", "kept by a negation\n");
    env.write("node_modules/left-pad/index.js", "module.exports = 1\n");
    env.write("target/debug/app", "ELF\n");
    env.write("target/debug/deps/x.d", "dep\n");
}

#[test]
fn ignored_files_are_not_granted_unless_asked_for() {
    let env = Env::new();
    project(&env);
    let g = grant_json(&env, &[]);
    assert_eq!(files(&g), vec![".gitignore", "src/keep.log", "src/main.rs"]);
    assert_eq!(g["include_ignored"], false);
    let g = grant_json(&env, &["--include-ignored"]);
    assert_eq!(
        files(&g),
        vec![
            ".gitignore",
            "node_modules/left-pad/index.js",
            "src/debug.log",
            "src/keep.log",
            "src/main.rs",
            "target/debug/app",
            "target/debug/deps/x.d",
        ]
    );
    assert_eq!(g["include_ignored"], true);
    // Asking for ignored files by name says why nothing matched.
    let err = env.fails(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--allow",
        "target/**",
    ]);
    assert!(err.contains("--include-ignored"), "{err}");
    // --include-ignored never brings back a denied file.
    env.write("node_modules/pkg/.env", "SECRET=1\n");
    let g = grant_json(&env, &["--include-ignored", "--allow", "node_modules/**"]);
    assert_eq!(files(&g), vec!["node_modules/left-pad/index.js"]);
}

#[test]
fn nested_gitignore_negation_and_info_exclude() {
    let env = Env::new();
    env.write(".gitignore", "*.tmp\n/dist\n");
    env.write("a.tmp", "t");
    env.write("dist/app.js", "js");
    env.write("web/dist/app.js", "anchored at the root: not ignored here");
    env.write("web/.gitignore", "!keep.tmp\ngenerated/\n");
    env.write("web/keep.tmp", "re-included beneath web");
    env.write("web/other.tmp", "still ignored");
    env.write("web/generated/api.ts", "gen");
    env.write("generated/api.ts", "web's rule does not reach here");
    // Beneath an ignored directory nothing can be re-included, as in git.
    env.write("dist/.gitignore", "!*\n");
    env.write(".git/info/exclude", "scratch/\n");
    env.write("scratch/notes.md", "local");
    env.write("web/scratch/notes.md", "local too");
    let g = grant_json(&env, &[]);
    assert_eq!(
        files(&g),
        vec![
            ".gitignore",
            "generated/api.ts",
            "web/.gitignore",
            "web/dist/app.js",
            "web/keep.tmp",
        ]
    );
}

#[test]
fn hard_links_are_counted_and_refused_by_strict_policies() {
    let env = Env::new();
    env.write(".env", "SECRET=hunter2\n");
    env.write("src/a.py", "a = 1\n");
    fs::hard_link(env.host.join(".env"), env.host.join("src/hard_env.py")).unwrap();

    // The default policy grants them, and says how many there are.
    let g = grant_json(&env, &[]);
    assert_eq!(files(&g), vec!["src/a.py", "src/hard_env.py"]);
    assert_eq!(g["hardlinked_files"], 1);
    assert_eq!(g["hardlinks_left_out"], serde_json::json!([]));
    assert_eq!(g["allow_hardlinks"], true);

    // The strict policy leaves them out, by name.
    let g = grant_json(&env, &["--policy", "strict", "--reason", "r"]);
    assert_eq!(files(&g), vec!["src/a.py"]);
    assert_eq!(g["hardlinked_files"], 1);
    assert_eq!(
        g["hardlinks_left_out"],
        serde_json::json!(["src/hard_env.py"])
    );
    assert_eq!(g["allow_hardlinks"], false);
    let err = env.fails(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--policy",
        "strict",
        "--reason",
        "r",
        "--allow",
        "src/hard_env.py",
    ]);
    assert!(err.contains("allow_hardlinks = false"), "{err}");

    // So does any policy that says so.
    let p = policy(&env, "nolinks.toml", "allow_hardlinks = false\n");
    let g = grant_json(&env, &["--policy", &p]);
    assert_eq!(files(&g), vec!["src/a.py"]);

    // Mounted, the strict view does not have it.
    let id = env.grant(&["--policy", "strict", "--reason", "r"]);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&id, &mp, &[]);
    assert_eq!(fs::read_to_string(m.path("src/a.py")).unwrap(), "a = 1\n");
    let e = fs::read(m.path("src/hard_env.py")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

fn search(env: &Env, extra: &[&str]) -> Vec<String> {
    let out = env.ok(&[
        &[
            "search",
            "--root",
            env.host.to_str().unwrap(),
            "payment",
            "--json",
            "--limit",
            "0",
        ],
        extra,
    ]
    .concat());
    let hits: Vec<Value> = serde_json::from_str(&out).unwrap();
    hits.iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn search_skips_ignored_denied_and_refused_hard_links() {
    let env = Env::new();
    env.write(".gitignore", "node_modules/\n*.log\n");
    env.write("src/payment.py", "def payment(): pass\n");
    env.write("node_modules/pay/payment.js", "payment\n");
    env.write("logs/payment.log", "payment failed\n");
    env.write(".env", "PAYMENT_KEY=secret\n");
    env.write(".git/payment", "payment\n");
    fs::hard_link(env.host.join(".env"), env.host.join("src/keys.py")).unwrap();

    // The default policy allows hard links: the link is found (and counted
    // in grants); strict policies refuse it.
    assert_eq!(search(&env, &[]), vec!["src/keys.py", "src/payment.py"]);
    assert_eq!(
        search(&env, &["--policy", "strict"]),
        vec!["src/payment.py"]
    );
    assert_eq!(
        search(&env, &["--include-ignored"]),
        vec![
            "logs/payment.log",
            "node_modules/pay/payment.js",
            "src/keys.py",
            "src/payment.py",
        ]
    );
    // Denied stays denied, ignored or not.
    assert_eq!(
        search(&env, &["--include-ignored", "--deny", "src/keys.py"]),
        vec![
            "logs/payment.log",
            "node_modules/pay/payment.js",
            "src/payment.py",
        ]
    );

    // Grants by intent search the same way.
    let g = grant_json(&env, &["--hint", "payment", "--max-files", "10"]);
    assert_eq!(files(&g), vec!["src/keys.py", "src/payment.py"]);
    let g = grant_json(
        &env,
        &[
            "--hint",
            "payment",
            "--max-files",
            "10",
            "--include-ignored",
            "--deny",
            "src/keys.py",
        ],
    );
    assert_eq!(
        files(&g),
        vec![
            "logs/payment.log",
            "node_modules/pay/payment.js",
            "src/payment.py",
        ]
    );
}
