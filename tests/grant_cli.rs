//! `wopfs grant` from the command line: output shapes and every refusal,
//! each leaving no grant behind.

mod common;

use common::*;

fn sessions(env: &Env) -> usize {
    std::fs::read_dir(env.state.join("sessions")).map_or(0, |d| d.count())
}

#[test]
fn prints_the_id_alone_or_the_grant_as_json() {
    let env = Env::new();
    env.write("src/a.py", "print(1)\n");
    env.write(".env", "SECRET=1\n");
    let id = env.grant(&[]);
    assert!(
        id.starts_with("g-") && id.len() == 18 && !id.contains('\n'),
        "{id:?}"
    );
    let json = env.grant(&["--json", "--reason", "fix the bug", "--ttl", "30m"]);
    let g: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(g["mode"], "read_only");
    assert_eq!(g["purpose"], "test");
    assert_eq!(g["reason"], "fix the bug");
    assert_eq!(g["files"].as_array().unwrap().len(), 1);
    assert_eq!(g["files"][0]["path"], "src/a.py");
    assert_eq!(g["files"][0]["file_type"], "python");
    assert_eq!(g["files"][0]["size_bytes"], 9);
    assert_eq!(g["root"], env.host.to_str().unwrap());
    assert!(g["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(g["requires_human_approval"], false);
    assert_eq!(g["allow_patterns"][0], "**");
    assert_eq!(sessions(&env), 2);
}

#[test]
fn state_dir_from_the_environment() {
    let env = Env::new();
    env.write("a.txt", "a");
    let out = wopfs_command()
        .args([
            "grant",
            "--root",
            env.host.to_str().unwrap(),
            "--purpose",
            "p",
        ])
        .env("WOPFS_STATE_DIR", &env.state)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(sessions(&env), 1);
}

#[test]
fn refusals_name_the_rule_and_record_nothing() {
    let env = Env::new();
    for i in 0..5 {
        env.write(&format!("f{i}.txt"), "0123456789");
    }
    let strict = env.dir.path().join("strict.toml");
    std::fs::write(
        &strict,
        "enabled = true\nmax_files = 3\nmax_total_size_bytes = 1000\nallowed_modes = [\"read_only\"]\nrequire_reason = true\n",
    )
    .unwrap();
    let s = strict.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--policy", s, "--reason", "r"],
            "too many files: 5 files match, max_files is 3",
        ),
        (&["--policy", s], "reason is required"),
        (
            &[
                "--policy",
                s,
                "--reason",
                "r",
                "--mode",
                "read_write_overlay",
            ],
            "mode read_write_overlay is not allowed",
        ),
        (
            &["--mode", "read_write_direct"],
            "mode read_write_direct is not allowed",
        ),
        (
            &["--max-files", "2"],
            "too many files: 5 files match, max_files is 2",
        ),
        (&["--allow", "*.rs"], "no file"),
        (&["--allow", "src/["], "invalid glob pattern \"src/[\""),
        (&["--ttl", "soon"], "invalid --ttl \"soon\""),
        (&["--policy", "/nonexistent.toml"], "/nonexistent.toml"),
    ];
    for (args, want) in cases {
        let err = env.fails(
            &[
                &[
                    "grant",
                    "--root",
                    env.host.to_str().unwrap(),
                    "--purpose",
                    "p",
                ],
                *args,
            ]
            .concat(),
        );
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            err.starts_with("wopfs: ") && err.trim_end().lines().count() == 1,
            "{err}"
        );
    }
    // Size and disabled policies.
    let tiny = env.dir.path().join("tiny.toml");
    std::fs::write(&tiny, "enabled = true\nmax_files = 10\nmax_total_size_bytes = 20\nallowed_modes = [\"read_only\"]\nrequire_reason = false\n").unwrap();
    let err = env.fails(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--policy",
        tiny.to_str().unwrap(),
    ]);
    assert!(
        err.contains("total size too large: the files hold 50 bytes, max_total_size_bytes is 20"),
        "{err}"
    );
    let off = env.dir.path().join("off.toml");
    std::fs::write(&off, "enabled = false\n").unwrap();
    let err = env.fails(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--policy",
        off.to_str().unwrap(),
    ]);
    assert!(err.contains("disabled"), "{err}");
    let typo = env.dir.path().join("typo.toml");
    std::fs::write(&typo, "enabled = true\nmax_file = 3\n").unwrap();
    let err = env.fails(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--policy",
        typo.to_str().unwrap(),
    ]);
    assert!(err.contains("unknown field `max_file`"), "{err}");
    // A state dir inside the host tree is refused.
    let inside = env.host.join(".wopfs-state");
    let out = wopfs_command()
        .args([
            "--state-dir",
            inside.to_str().unwrap(),
            "grant",
            "--root",
            env.host.to_str().unwrap(),
            "--purpose",
            "p",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the host tree"));
    assert!(
        !inside.exists(),
        "the refused state dir was created in the host tree"
    );
    assert_eq!(sessions(&env), 0, "a refused grant left a record");
}

#[test]
fn builtin_strict_policy_by_name() {
    let env = Env::new();
    env.write("a.txt", "a");
    let err = env.fails(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--policy",
        "strict",
    ]);
    assert!(
        err.contains("reason is required") && err.contains("builtin:strict"),
        "{err}"
    );
    let json = env.ok(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--policy",
        "strict",
        "--reason",
        "r",
        "--json",
    ]);
    let g: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(g["requires_human_approval"], true);
    assert_eq!(g["policy"], "builtin:strict");
}
