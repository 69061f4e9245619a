//! `wopfs search`

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::error::Result;
use crate::grant::FileType;
use crate::policy::Policy;
use crate::search::{search_with, Hit, Query};

/// The seed's file-type names, as `--type` takes them.
const TYPE_NAMES: [(&str, FileType); 10] = [
    ("python", FileType::Python),
    ("typescript", FileType::Typescript),
    ("javascript", FileType::Javascript),
    ("yaml", FileType::Yaml),
    ("json", FileType::Json),
    ("toml", FileType::Toml),
    ("markdown", FileType::Markdown),
    ("sql", FileType::Sql),
    ("shell", FileType::Shell),
    ("other", FileType::Other),
];

/// Parses `--type NAME` into a [`FileType`]; clap lists the names in help
/// and errors.
pub(super) fn file_type_parser() -> impl TypedValueParser<Value = FileType> {
    PossibleValuesParser::new(TYPE_NAMES.map(|(n, _)| n)).map(|s| {
        TYPE_NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, t)| *t)
            .unwrap_or(FileType::Other)
    })
}

/// The `--type` name of a file type.
pub(super) fn type_name(t: FileType) -> &'static str {
    TYPE_NAMES
        .iter()
        .find(|(_, x)| *x == t)
        .map_or("other", |(n, _)| n)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host tree to search.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// What the files are for, in words: each word counts where it appears
    /// in a path (×5) and in the content.
    #[arg(value_name = "QUERY", required = true, num_args = 1..)]
    query: Vec<String>,
    /// Only files of this type (repeatable).
    #[arg(long = "type", value_name = "TYPE", value_parser = file_type_parser())]
    types: Vec<FileType>,
    /// At most this many files (0: every match; at most 1000000).
    #[arg(long, value_name = "N", default_value_t = 20, allow_hyphen_values = true,
          value_parser = super::number::number::<usize>(0, super::number::MAX_LIMIT))]
    limit: usize,
    /// Policy file, or a built-in policy name (default, strict); its deny
    /// patterns are never searched.
    #[arg(long, value_name = "FILE")]
    policy: Option<String>,
    /// Glob of files never to search (repeatable), beside the policy's.
    #[arg(long = "deny", value_name = "GLOB")]
    deny: Vec<String>,
    /// Search files that `.gitignore` ignores too.
    #[arg(long)]
    include_ignored: bool,
    /// Print the hits as a JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let policy = match &a.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::builtin_default()?,
    };
    let text = a.query.join(" ");
    let hits = search_with(
        &a.root,
        &policy,
        &a.deny,
        &Query {
            text: &text,
            types: &a.types,
            limit: if a.limit == 0 { usize::MAX } else { a.limit },
        },
        a.include_ignored,
    )?;
    if a.json {
        return super::print_json(&hits);
    }
    if hits.is_empty() {
        eprintln!("wopfs: no file of {} matches {text:?}", a.root.display());
        return Ok(());
    }
    out!("{}", table(&hits))?;
    Ok(())
}

/// SCORE, TYPE, SIZE, PATH, SUMMARY in aligned columns.
fn table(hits: &[Hit]) -> String {
    let rows: Vec<[String; 5]> = hits
        .iter()
        .map(|h| {
            [
                h.score.to_string(),
                type_name(h.file_type).to_string(),
                h.size_bytes.to_string(),
                h.path.clone(),
                h.summary.clone(),
            ]
        })
        .collect();
    let header = ["SCORE", "TYPE", "SIZE", "PATH", "SUMMARY"];
    let mut width = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let [score, kind, size, path, summary] = cells;
        let l = format!(
            "{score:>w0$}  {kind:<w1$}  {size:>w2$}  {path:<w3$}  {summary}",
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
        );
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_round_trips() {
        for (name, t) in TYPE_NAMES {
            assert_eq!(type_name(t), name);
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::String(name.into())
            );
        }
    }

    #[test]
    fn table_aligns_columns() {
        let hit = |path: &str, score: f64| Hit {
            path: path.into(),
            file_type: FileType::detect(path),
            score,
            size_bytes: 1234,
            summary: "def pay():".into(),
        };
        let t = table(&[hit("src/pay.py", 12.0), hit("README.md", 1.0)]);
        assert_eq!(
            t,
            "SCORE  TYPE      SIZE  PATH        SUMMARY\n\
             \x20  12  python    1234  src/pay.py  def pay():\n\
             \x20   1  markdown  1234  README.md   def pay():\n"
        );
    }
}
