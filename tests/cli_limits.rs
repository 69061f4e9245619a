//! Every number and duration a user gives on the command line is
//! range-checked: extreme values (0, -1, u64::MAX, 2^64, huge durations,
//! `1e99`, empty) fed to each numeric flag of each subcommand end with a
//! usage error (exit 2) or a command error (exit 1) naming the flag and its
//! range, never a panic (exit 101).

mod common;

use common::*;

/// A signing key (32 bytes, base64) for the token commands.
const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

const U64_MAX: &str = "18446744073709551615";
const TWO_TO_64: &str = "18446744073709551616";

fn wopfs(env: &Env, args: &[&str]) -> std::process::Output {
    wopfs_command()
        .arg("--state-dir")
        .arg(&env.state)
        .args(args)
        .env("A2A_GRANT_SIGNING_KEY", KEY)
        .env_remove("A2A_GRANT_VERIFYING_KEY")
        .env_remove("WOPFS_STATE_DIR")
        .output()
        .expect("running wopfs")
}

/// One numeric flag: the command line before it, and the values it must
/// refuse and accept.
struct Flag<'a> {
    flag: &'a str,
    before: Vec<&'a str>,
    after: Vec<&'a str>,
    refused: Vec<&'a str>,
    /// In range: the command may still fail for other reasons (a grant
    /// that does not exist), but never by panicking.
    accepted: Vec<&'a str>,
}

#[test]
fn every_numeric_flag_is_range_checked_by_name() {
    let env = Env::new();
    env.write("a.txt", "a\n");
    let root = env.host.to_str().unwrap().to_string();
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let token = String::from_utf8(
        wopfs(
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
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(!token.is_empty());
    let mp = env.mountpoint("mnt");
    let mp = mp.to_str().unwrap();

    // Values no numeric flag takes.
    let always = [
        "-1",
        TWO_TO_64,
        "99999999999999999999999999999",
        "1e99",
        "",
        " ",
        "1.5",
        "0x10",
        "-5m",
        "nan",
    ];
    // Durations no lifetime takes.
    let huge = [
        "99999999999999999s",
        "999999999years",
        "3651d",
        "18446744073709551615s",
        "0s",
        "500ms",
    ];
    let with = |mut v: Vec<&'static str>, more: &[&'static str]| {
        v.extend_from_slice(more);
        v
    };
    let grant = vec!["grant", "--root", root.as_str(), "--purpose", "p"];
    let mint = vec![
        "token",
        "mint",
        "--issuer",
        "i",
        "--audience",
        "a",
        "--bucket",
        "b",
    ];
    let delegate = vec!["token", "delegate", token.as_str(), "--audience", "c"];
    let mount = vec!["mount", g.as_str(), mp];
    let bogus_mount = vec!["mount", "g-0000000000000000", mp];
    let run = vec!["run", "g-0000000000000000"];
    let search = vec!["search", "--root", root.as_str(), "a"];
    let flags = [
        Flag {
            flag: "--ttl",
            before: grant.clone(),
            after: vec![],
            refused: with(with(always.to_vec(), &huge), &["0", U64_MAX]),
            accepted: vec!["1s", "3650d", "1h30m"],
        },
        Flag {
            flag: "--max-files",
            before: grant.clone(),
            after: vec![],
            refused: with(always.to_vec(), &["0", U64_MAX, "1000000001"]),
            accepted: vec!["1", "1000000000"],
        },
        Flag {
            flag: "--ttl",
            before: mint.clone(),
            after: vec![],
            refused: with(with(always.to_vec(), &huge), &["0", U64_MAX, "315360001"]),
            accepted: vec!["1", "315360000", "3650d"],
        },
        Flag {
            flag: "--ttl",
            before: delegate.clone(),
            after: vec![],
            refused: with(with(always.to_vec(), &huge), &["0", U64_MAX, "315360001"]),
            accepted: vec!["1", "315360000"],
        },
        Flag {
            flag: "--threads",
            before: bogus_mount.clone(),
            after: vec![],
            refused: with(always.to_vec(), &["0", U64_MAX, "257"]),
            accepted: vec!["1", "256"],
        },
        Flag {
            flag: "--cache-ttl",
            before: bogus_mount.clone(),
            after: vec![],
            refused: with(with(always.to_vec(), &huge[..4]), &[U64_MAX, "2d"]),
            accepted: vec!["0", "0s", "1d", "250ms"],
        },
        Flag {
            flag: "--uid",
            before: bogus_mount.clone(),
            after: vec!["--gid", "0"],
            refused: with(always.to_vec(), &[U64_MAX, "4294967295"]),
            accepted: vec!["0", "4294967294"],
        },
        Flag {
            flag: "--gid",
            before: bogus_mount.clone(),
            after: vec!["--uid", "0"],
            refused: with(always.to_vec(), &[U64_MAX, "4294967295"]),
            accepted: vec!["0", "4294967294"],
        },
        Flag {
            flag: "--quota-bytes",
            before: mount.clone(),
            after: vec![],
            refused: with(always.to_vec(), &["0", U64_MAX, "9223372036854775808"]),
            accepted: vec![],
        },
        Flag {
            flag: "--quota-bytes",
            before: bogus_mount.clone(),
            after: vec![],
            refused: vec![],
            accepted: vec!["1", "9223372036854775807"],
        },
        Flag {
            flag: "--quota-files",
            before: mount.clone(),
            after: vec![],
            refused: with(always.to_vec(), &["0", U64_MAX, "1000000001"]),
            accepted: vec![],
        },
        Flag {
            flag: "--quota-files",
            before: bogus_mount.clone(),
            after: vec![],
            refused: vec![],
            accepted: vec!["1", "1000000000"],
        },
        Flag {
            flag: "--uid",
            before: run.clone(),
            after: vec!["--gid", "0", "--", "true"],
            refused: with(always.to_vec(), &[U64_MAX, "4294967295"]),
            accepted: vec!["0", "4294967294"],
        },
        Flag {
            flag: "--gid",
            before: run.clone(),
            after: vec!["--uid", "0", "--", "true"],
            refused: with(always.to_vec(), &[U64_MAX, "4294967295"]),
            accepted: vec!["0", "4294967294"],
        },
        Flag {
            flag: "--limit",
            before: search.clone(),
            after: vec![],
            refused: with(always.to_vec(), &[U64_MAX, "1000001"]),
            accepted: vec!["0", "1", "1000000"],
        },
    ];

    let mut checked = 0;
    for f in &flags {
        for value in f.refused.iter().chain(&f.accepted) {
            let refused = f.refused.contains(value);
            // `--flag value` and `--flag=value`: both reach the flag.
            for joined in [false, true] {
                let eq = format!("{}={value}", f.flag);
                let mut args = f.before.clone();
                if joined {
                    args.push(&eq);
                } else {
                    args.extend([f.flag, value]);
                }
                args.extend(&f.after);
                let out = wopfs(&env, &args);
                let err = String::from_utf8_lossy(&out.stderr);
                let what = format!("{args:?}: {:?}\n{err}", out.status);
                assert!(!err.contains("panicked"), "{what}");
                assert_ne!(out.status.code(), Some(101), "{what}");
                assert!(out.status.code().is_some(), "{what}");
                if refused {
                    assert!(matches!(out.status.code(), Some(1) | Some(2)), "{what}");
                    assert!(err.contains(f.flag), "the error names the flag: {what}");
                    assert!(
                        err.contains("from ") && err.contains(" to "),
                        "the error names the range: {what}"
                    );
                    assert!(!is_mounted(std::path::Path::new(mp)), "mounted with {what}");
                } else {
                    // In range: not refused for this flag.
                    assert!(
                        !err.contains(&format!("for {}", f.flag))
                            && !err.contains(&format!("invalid {}", f.flag)),
                        "{what}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "{checked}");

    // The longest lifetimes really work, and print a valid expiry.
    let json = env.ok(&[
        "grant",
        "--root",
        &root,
        "--purpose",
        "p",
        "--ttl",
        "3650d",
        "--json",
    ]);
    assert!(json.contains("\"expires_at\""), "{json}");
    let out = wopfs(&env, &with(mint.clone(), &["--ttl", "315360000"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let long = String::from_utf8(out.stdout).unwrap();
    let out = wopfs(&env, &["token", "verify", long.trim()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
