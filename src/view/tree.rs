//! The view's inode tree: the granted files and the directories on their
//! paths, nothing else. Inode numbers are indices, stable for a mount's life.

use crate::grant::FileMatch;

pub type Ino = u64;
pub const ROOT: Ino = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

#[derive(Debug)]
pub struct Node {
    pub parent: Ino,
    pub name: Box<str>,
    pub kind: Kind,
    /// Directories only: children sorted by name.
    pub children: Vec<Ino>,
}

#[derive(Debug)]
pub struct Tree {
    /// `nodes[ino - 1]`; the root is first.
    nodes: Vec<Node>,
}

impl Tree {
    /// Builds the tree from a grant's file list (sorted by path, as grants are).
    pub fn from_files(files: &[FileMatch]) -> Tree {
        let mut tree = Tree {
            nodes: vec![Node {
                parent: ROOT,
                name: "".into(),
                kind: Kind::Dir,
                children: Vec::new(),
            }],
        };
        // The directory chain of the previous path: sorted input means a new
        // path shares a prefix of it, so each directory is created once.
        let mut chain: Vec<(Box<str>, Ino)> = Vec::new();
        for f in files {
            let mut segs: Vec<&str> = f.path.split('/').collect();
            let Some(leaf) = segs.pop() else { continue };
            let common = chain
                .iter()
                .zip(&segs)
                .take_while(|((name, _), seg)| &**name == **seg)
                .count();
            chain.truncate(common);
            for seg in &segs[common..] {
                let parent = chain.last().map_or(ROOT, |(_, ino)| *ino);
                let ino = tree.push(parent, seg, Kind::Dir);
                chain.push(((*seg).into(), ino));
            }
            let parent = chain.last().map_or(ROOT, |(_, ino)| *ino);
            let kind = if f.symlink { Kind::Symlink } else { Kind::File };
            tree.push(parent, leaf, kind);
        }
        for i in 0..tree.nodes.len() {
            let mut children = std::mem::take(&mut tree.nodes[i].children);
            children.sort_by(|a, b| tree.name(*a).cmp(tree.name(*b)));
            tree.nodes[i].children = children;
        }
        tree
    }

    fn push(&mut self, parent: Ino, name: &str, kind: Kind) -> Ino {
        self.nodes.push(Node {
            parent,
            name: name.into(),
            kind,
            children: Vec::new(),
        });
        let ino = self.nodes.len() as Ino;
        self.nodes[(parent - 1) as usize].children.push(ino);
        ino
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(ino.checked_sub(1)? as usize)
    }

    fn name(&self, ino: Ino) -> &str {
        self.get(ino).map_or("", |n| &n.name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The child of directory `parent` called `name`.
    pub fn child(&self, parent: Ino, name: &str) -> Option<Ino> {
        let dir = self.get(parent)?;
        dir.children
            .binary_search_by(|c| self.name(*c).cmp(name))
            .ok()
            .map(|i| dir.children[i])
    }

    /// The node's path relative to the root (`""` for the root).
    pub fn path(&self, ino: Ino) -> Option<String> {
        let mut segs = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let n = self.get(cur)?;
            segs.push(&*n.name);
            cur = n.parent;
        }
        segs.reverse();
        Some(segs.join("/"))
    }

    /// Number of subdirectories of a directory (for its link count).
    pub fn subdirs(&self, ino: Ino) -> usize {
        self.get(ino).map_or(0, |n| {
            n.children
                .iter()
                .filter(|c| self.get(**c).is_some_and(|c| c.kind == Kind::Dir))
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::FileType;

    fn f(p: &str) -> FileMatch {
        FileMatch {
            path: p.into(),
            file_type: FileType::Other,
            size_bytes: 0,
            symlink: false,
        }
    }

    #[test]
    fn builds_only_dirs_on_granted_paths() {
        let files: Vec<_> = ["README.md", "a/b/c.txt", "a/b/d.txt", "a/e.txt", "z/y/x"]
            .into_iter()
            .map(f)
            .collect();
        let t = Tree::from_files(&files);
        // root, README.md, a, a/b, c, d, e, z, z/y, x
        assert_eq!(t.len(), 10);
        let a = t.child(ROOT, "a").unwrap();
        let b = t.child(a, "b").unwrap();
        assert_eq!(t.get(b).unwrap().kind, Kind::Dir);
        let c = t.child(b, "c.txt").unwrap();
        assert_eq!(t.path(c).unwrap(), "a/b/c.txt");
        assert_eq!(t.path(ROOT).unwrap(), "");
        assert_eq!(t.child(ROOT, "missing"), None);
        assert_eq!(t.child(c, "x"), None);
        assert_eq!(t.subdirs(ROOT), 2);
        let names: Vec<_> = t
            .get(a)
            .unwrap()
            .children
            .iter()
            .map(|i| t.name(*i))
            .collect();
        assert_eq!(names, vec!["b", "e.txt"]);
    }
}
