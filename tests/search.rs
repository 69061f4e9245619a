//! Intent search (`wopfs search`, `wopfs::search`) and grants by intent
//! (`wopfs grant --hint/--type`): ranking, filters, what is never searched,
//! and exact grants of the best files.

mod common;

use common::*;
use serde_json::Value;
use wopfs::grant::FileType;
use wopfs::policy::Policy;
use wopfs::search::{search, Hit, Query};

fn find(env: &Env, text: &str, types: &[FileType], limit: usize) -> Vec<Hit> {
    find_denying(env, text, types, limit, &[])
}

fn find_denying(
    env: &Env,
    text: &str,
    types: &[FileType],
    limit: usize,
    deny: &[&str],
) -> Vec<Hit> {
    let deny: Vec<String> = deny.iter().map(|s| s.to_string()).collect();
    search(
        &env.host,
        &Policy::builtin_default().unwrap(),
        &deny,
        &Query { text, types, limit },
    )
    .unwrap()
}

fn paths(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.path.as_str()).collect()
}

fn scored(hits: &[Hit]) -> Vec<(&str, f64)> {
    hits.iter().map(|h| (h.path.as_str(), h.score)).collect()
}

#[test]
fn path_hits_outrank_content_hits_and_ties_go_by_path() {
    let env = Env::new();
    env.write("src/payment.py", "x = 1\n"); // path: 5
    env.write("docs/notes.md", "Payment, payment; PAYMENT and payment\n"); // content: 4
    env.write("b_tie.txt", "payment payment\n"); // content: 2
    env.write("a_tie.txt", "payment payment\n"); // content: 2, first by path
    env.write("src/payment_payment.py", "payment\n"); // path: 10 + content: 1
    env.write("src/unrelated.py", "print(1)\n");
    let hits = find(&env, "PAYMENT", &[], usize::MAX);
    assert_eq!(
        scored(&hits),
        vec![
            ("src/payment_payment.py", 11.0),
            ("src/payment.py", 5.0),
            ("docs/notes.md", 4.0),
            ("a_tie.txt", 2.0),
            ("b_tie.txt", 2.0),
        ]
    );
    // Several terms add up, each counted once however often the query repeats it.
    let hits = find(&env, "payment notes notes", &[], usize::MAX);
    let notes = hits.iter().find(|h| h.path == "docs/notes.md").unwrap();
    assert_eq!(notes.score, 9.0);
    assert_eq!(notes.file_type, FileType::Markdown);
    assert_eq!(notes.size_bytes, 38);
}

#[test]
fn type_filter_and_limit() {
    let env = Env::new();
    env.write("a.py", "round round round\n");
    env.write("b.py", "round\n");
    env.write("c.md", "round round round round\n");
    env.write("d.sql", "select round(x)\n");
    env.write("e.ts", "round(1)\n");
    let hits = find(&env, "round", &[FileType::Python], usize::MAX);
    assert_eq!(paths(&hits), vec!["a.py", "b.py"]);
    let hits = find(
        &env,
        "round",
        &[FileType::Python, FileType::Sql],
        usize::MAX,
    );
    assert_eq!(paths(&hits), vec!["a.py", "b.py", "d.sql"]);
    assert_eq!(hits[2].file_type, FileType::Sql);
    let hits = find(&env, "round", &[], 2);
    assert_eq!(paths(&hits), vec!["c.md", "a.py"]);
    let hits = find(&env, "round", &[], usize::MAX);
    assert_eq!(hits.len(), 5);
    assert!(find(&env, "round", &[], 0).is_empty());
    // The CLI: --type takes the seed's names, --limit cuts.
    let root = env.host.to_str().unwrap();
    let out = env.ok(&[
        "search", "--root", root, "round", "--type", "python", "--type", "sql", "--limit", "2",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec!["a.py", "b.py"]);
    // --limit 0: every match.
    let out = env.ok(&["search", "--root", root, "round", "--limit", "0", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    let out = env.wopfs(&["search", "--root", root, "round", "--type", "rust"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rust") && err.contains("python"), "{err}");
}

#[test]
fn binaries_and_large_files_are_skipped() {
    let env = Env::new();
    env.write("text.txt", "secret sauce: rounding\n");
    std::fs::write(env.host.join("nul.txt"), b"rounding\0rounding\n").unwrap();
    std::fs::write(env.host.join("latin1.txt"), b"rounding caf\xe9\n").unwrap();
    // A NUL after the first 8 KiB does not make a file binary (it is still UTF-8).
    let mut late = "rounding\n".repeat(1000).into_bytes();
    late.push(0);
    std::fs::write(env.host.join("late_nul.txt"), &late).unwrap();
    let big = "rounding\n".repeat((1 << 20) / 9 + 1);
    assert!(big.len() > 1 << 20);
    env.write("big.txt", &big);
    let exact = "x".repeat((1 << 20) - 9) + "rounding\n";
    assert_eq!(exact.len(), 1 << 20);
    env.write("exactly_1mib.txt", &exact);
    // Also by name: a binary whose path matches is not returned.
    std::fs::write(env.host.join("rounding.bin"), b"\x00\x01\x02").unwrap();
    let hits = find(&env, "rounding", &[], usize::MAX);
    assert_eq!(
        paths(&hits),
        vec!["late_nul.txt", "exactly_1mib.txt", "text.txt"]
    );
    assert_eq!(hits[1].size_bytes, 1 << 20);
}

#[test]
fn denied_files_are_never_returned_even_when_they_match_best() {
    let env = Env::new();
    env.write("src/pay.py", "def pay(): pass  # payment\n");
    env.write(".env", "PAYMENT_KEY=payment payment payment\n");
    env.write("config/payment.env", "PAYMENT=1\n");
    env.write("deploy/payment.pem", "payment\n");
    env.write(".git/payment", "payment payment\n");
    env.write("secrets/payment.txt", "payment payment payment\n");
    env.write("private/payment/notes.md", "payment\n");
    env.link("payment_link.py", ".env");
    env.link("src/payment_secret.txt", "../secrets/payment.txt");
    env.link("payment_passwd", "/etc/passwd");
    env.link("payment_dir", "secrets");
    let hits = find_denying(&env, "payment", &[], usize::MAX, &["secrets", "private/"]);
    assert_eq!(paths(&hits), vec!["src/pay.py"]);
    // Without the caller's denies, only the policy's apply.
    let hits = find(&env, "payment", &[], usize::MAX);
    assert_eq!(
        paths(&hits),
        vec![
            "secrets/payment.txt",
            "private/payment/notes.md",
            "src/pay.py"
        ]
    );
    // The CLI's --deny and --policy feed the same sets.
    let root = env.host.to_str().unwrap();
    let out = env.ok(&[
        "search", "--root", root, "payment", "--deny", "secrets", "--deny", "private/", "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(v[0]["path"], "src/pay.py");
    let out = env.ok(&["search", "--root", root, "payment", "--policy", "strict"]);
    assert!(
        !out.contains("secrets/") && !out.contains(".env") && out.contains("src/pay.py"),
        "{out}"
    );
}

#[test]
fn summary_is_the_first_line_with_a_term() {
    let env = Env::new();
    env.write(
        "src/pay.py",
        "\n\n\"\"\"Payments.\"\"\"\nimport decimal\n\n    def round_half(x):   \n# rounding\n",
    );
    env.write("src/rounding.py", "\n   import math  \nx = 1\n");
    env.write("src/empty_rounding.py", "");
    let long = format!("# rounding {}\n", "é".repeat(200));
    env.write("long.py", &long);
    let hits = find(&env, "round", &[], usize::MAX);
    let by_path = |p: &str| hits.iter().find(|h| h.path == p).unwrap().summary.clone();
    assert_eq!(by_path("src/pay.py"), "def round_half(x):");
    // Only the path matches: the first non-empty line.
    assert_eq!(by_path("src/rounding.py"), "import math");
    assert_eq!(by_path("src/empty_rounding.py"), "");
    let s = by_path("long.py");
    assert_eq!(s.chars().count(), 120);
    assert!(s.starts_with("# rounding éé"), "{s}");
}

#[test]
fn json_and_table_output() {
    let env = Env::new();
    env.write("src/payment.py", "def pay(amount):\n    return amount\n");
    env.write("README.md", "# Shop\n\nHandles payment.\n");
    let root = env.host.to_str().unwrap();
    let out = env.ok(&["search", "--root", root, "payment", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let hits = v.as_array().unwrap();
    assert_eq!(hits.len(), 2);
    let first = hits[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec!["file_type", "path", "score", "size_bytes", "summary"]
    );
    assert_eq!(hits[0]["path"], "src/payment.py");
    assert_eq!(hits[0]["file_type"], "python");
    assert_eq!(hits[0]["score"].as_f64(), Some(5.0));
    assert_eq!(hits[0]["size_bytes"], 35);
    assert_eq!(hits[0]["summary"], "def pay(amount):");
    assert_eq!(hits[1]["path"], "README.md");
    assert_eq!(hits[1]["file_type"], "markdown");
    assert_eq!(hits[1]["summary"], "Handles payment.");

    // No state dir is needed (nor created) by a search.
    assert!(!env.state.exists());

    let table = env.ok(&["search", "--root", root, "payment"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("SCORE  TYPE"), "{table}");
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cols[..5],
        &["5", "python", "35", "src/payment.py", "def"],
        "{table}"
    );
    assert!(lines[2].contains("README.md") && lines[2].ends_with("Handles payment."));

    // Nothing found: an empty array, or a note on stderr; success either way.
    assert_eq!(
        env.ok(&["search", "--root", root, "nothing_here", "--json"]),
        "[]"
    );
    let out = env.wopfs(&["search", "--root", root, "nothing_here"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no file"));
    // A query without words, a missing root: one-sentence errors.
    let err = env.fails(&["search", "--root", root, "--", "--- !"]);
    assert!(err.contains("no word"), "{err}");
    let err = env.fails(&["search", "--root", "/nonexistent/tree", "x"]);
    assert!(err.contains("/nonexistent/tree"), "{err}");
}

/// A host tree for grants by intent; the query is
/// "fix the rounding bug payment" (terms fix, the, rounding, bug, payment).
fn payments(env: &Env) {
    env.write(
        "src/payment/rounding.py",
        "def round_half(amount):\n    return amount\n",
    ); // 10
    env.write("src/payment/api.py", "def charge():\n    pass\n"); // 5
    env.write(
        "tests/test_payment.py",
        "def test_payment_rounding():\n    assert True\n",
    ); // 5 + 2
    env.write("src/billing.py", "# payment rounding bug\nx = 1\n"); // 3
    env.write("src/unrelated.py", "print(1)\n"); // 0
    env.write("docs/payment.md", "payment rounding\n"); // 7, not python
    env.write(".env", "PAYMENT_ROUNDING_BUG=payment rounding fix\n"); // denied
}

fn granted_files(g: &Value) -> Vec<&str> {
    g["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect()
}

#[test]
fn grant_by_intent_grants_exactly_the_top_matches() {
    let env = Env::new();
    payments(&env);
    let root = env.host.to_str().unwrap();
    let json = env.ok(&[
        "grant",
        "--root",
        root,
        "--purpose",
        "fix the rounding bug",
        "--hint",
        "payment",
        "--type",
        "python",
        "--max-files",
        "3",
        "--json",
    ]);
    let g: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        granted_files(&g),
        vec![
            "src/payment/api.py",
            "src/payment/rounding.py",
            "tests/test_payment.py"
        ]
    );
    assert_eq!(g["purpose"], "fix the rounding bug");
    assert_eq!(g["max_files"], 3);
    assert_eq!(g["allow_patterns"].as_array().unwrap().len(), 3);
    // The same ranking as `wopfs search` with the same words.
    let out = env.ok(&[
        "search",
        "--root",
        root,
        "fix the rounding bug payment",
        "--type",
        "python",
        "--limit",
        "3",
        "--json",
    ]);
    let hits: Value = serde_json::from_str(&out).unwrap();
    let mut top: Vec<&str> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert_eq!(top[0], "src/payment/rounding.py");
    top.sort();
    assert_eq!(top, granted_files(&g));

    // Without --max-files: up to 10 files; without --type: any type, never a denied one.
    let json = env.ok(&[
        "grant",
        "--root",
        root,
        "--purpose",
        "fix the rounding bug",
        "--hint",
        "payment",
        "--json",
    ]);
    let g: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        granted_files(&g),
        vec![
            "docs/payment.md",
            "src/billing.py",
            "src/payment/api.py",
            "src/payment/rounding.py",
            "tests/test_payment.py"
        ]
    );
    // The audit log records the intent.
    let audit = std::fs::read_to_string(env.state.join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"hints\":[\"payment\"]") && audit.contains("\"types\":[\"python\"]"),
        "{audit}"
    );
    // The grant mounts like any other (checked by the view's own tests); here
    // its file list is all that matters.
}

#[test]
fn grant_by_intent_refusals() {
    let env = Env::new();
    payments(&env);
    let root = env.host.to_str().unwrap();
    let base = ["grant", "--root", root, "--purpose", "fix the rounding bug"];
    let with =
        |extra: &[&'static str]| -> Vec<&str> { base.iter().chain(extra).copied().collect() };

    let err = env.fails(&with(&["--hint", "payment", "--allow", "src/**"]));
    assert!(
        err.contains("--hint/--type choose files by intent; they cannot be combined with --allow"),
        "{err}"
    );
    let err = env.fails(&with(&["--type", "python", "--allow", "src/**"]));
    assert!(err.contains("cannot be combined with --allow"), "{err}");

    let err = env.fails(&[
        "grant",
        "--root",
        root,
        "--purpose",
        "tune the cache",
        "--hint",
        "redis",
        "--type",
        "sql",
    ]);
    assert!(
        err.contains(&format!(
            "no file of {root} matches the purpose and hints (\"tune the cache redis\"; types: sql)"
        )),
        "{err}"
    );
    assert!(
        err.starts_with("wopfs: ") && err.trim_end().lines().count() == 1,
        "{err}"
    );

    // A policy that requires a reason still does.
    let err = env.fails(&with(&["--hint", "payment", "--policy", "strict"]));
    assert!(err.contains("reason is required"), "{err}");
    let json = env.ok(&with(&[
        "--hint",
        "payment",
        "--policy",
        "strict",
        "--reason",
        "ticket 42",
        "--max-files",
        "1",
        "--json",
    ]));
    let g: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(granted_files(&g), vec!["src/payment/rounding.py"]);
    assert_eq!(g["reason"], "ticket 42");
    assert_eq!(g["requires_human_approval"], true);

    // --max-files above the policy's limit is refused as before.
    let err = env.fails(&with(&[
        "--hint",
        "payment",
        "--policy",
        "strict",
        "--reason",
        "r",
        "--max-files",
        "501",
    ]));
    assert!(err.contains("--max-files 501 exceeds"), "{err}");

    // An unknown type is a usage error.
    let out = env.wopfs(&with(&["--type", "cobol"]));
    assert_eq!(out.status.code(), Some(2));
    let sessions = std::fs::read_dir(env.state.join("sessions"))
        .unwrap()
        .count();
    assert_eq!(sessions, 1, "a refused grant left a record");
}

#[test]
fn grant_by_intent_escapes_glob_metacharacters() {
    let env = Env::new();
    env.write("src/weird[1].py", "weird weird\n"); // 5 + 2
    env.write("src/weird1.py", "x\n"); // 5: what an unescaped `weird[1].py` matches
    env.write("src/star*.py", "star star star\n"); // 5 + 3
    env.write("src/starry.py", "x\n"); // 5: what an unescaped `star*.py` matches
    env.write("src/{a,b}.py", "brace\nbrace\n"); // 2
    env.write("src/a.py", "x\n");
    env.write("src/back\\slash.py", "slash\n"); // 5 + 1
    env.write("src/backslash.py", "x\n"); // 5
    let root = env.host.to_str().unwrap();
    let grant = |hint: &str| -> Vec<String> {
        let json = env.ok(&[
            "grant",
            "--root",
            root,
            "--purpose",
            "odd names",
            "--hint",
            hint,
            "--max-files",
            "1",
            "--json",
        ]);
        let g: Value = serde_json::from_str(&json).unwrap();
        granted_files(&g).iter().map(|s| s.to_string()).collect()
    };
    assert_eq!(grant("weird"), vec!["src/weird[1].py"]);
    assert_eq!(grant("star"), vec!["src/star*.py"]);
    assert_eq!(grant("brace"), vec!["src/{a,b}.py"]);
    assert_eq!(grant("slash"), vec!["src/back\\slash.py"]);
}
