//! The seed's `FileType`, detected from the file name's extension.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    Python,
    Typescript,
    Javascript,
    Yaml,
    Json,
    Toml,
    Markdown,
    Sql,
    Shell,
    Other,
}

impl FileType {
    /// The seed's extension table.
    pub fn detect(path: &str) -> FileType {
        let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
        match ext {
            "py" => FileType::Python,
            "ts" | "tsx" => FileType::Typescript,
            "js" | "jsx" => FileType::Javascript,
            "yaml" | "yml" => FileType::Yaml,
            "json" => FileType::Json,
            "toml" => FileType::Toml,
            "md" => FileType::Markdown,
            "sql" => FileType::Sql,
            "sh" => FileType::Shell,
            _ => FileType::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_extension_table() {
        assert_eq!(FileType::detect("src/pay.py"), FileType::Python);
        assert_eq!(FileType::detect("ui/App.tsx"), FileType::Typescript);
        assert_eq!(FileType::detect("a.jsx"), FileType::Javascript);
        assert_eq!(FileType::detect("ci.yml"), FileType::Yaml);
        assert_eq!(FileType::detect("Makefile"), FileType::Other);
        assert_eq!(FileType::detect("dir.py/file"), FileType::Other);
        assert_eq!(
            serde_json::to_string(&FileType::Markdown).unwrap(),
            "\"markdown\""
        );
    }
}
