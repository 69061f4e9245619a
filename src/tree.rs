//! The view's inode tree: the granted files, the directories on their
//! paths, and whatever the agent created. Inode numbers are indices, never
//! reused during a mount (a removed node stays as a tombstone), so the
//! kernel can never confuse an old inode with a new one.
//!
//! A node is a name in a directory. A file with several names (hard links)
//! is one node per name: the first is the file itself, the number the
//! kernel knows it by; the others point at it (`Tree::inode_of`, kept
//! beside the nodes: links are rare, nodes many). Unlinking the
//! file's own name moves the file into the place of one of its other names,
//! so its number stays live while any name is left. In the overlay, one
//! object is one file: every name of a file holds its object, and a second
//! name that puts an object already held is a hard link (how the journal
//! records links).

use std::collections::HashMap;

use crate::grant::FileMatch;

pub type Ino = u64;
pub const ROOT: Ino = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// Where a node's content and metadata live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The host entry at the node's own path, untouched.
    InPlace,
    /// An untouched host entry that was renamed: it still reads from `path`.
    Host(Box<str>),
    /// An object in the session's overlay (created, or copied up).
    Upper(u64),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub parent: Ino,
    pub name: Box<str>,
    pub kind: Kind,
    pub origin: Origin,
    /// Directories only: children sorted by name.
    pub children: Vec<Ino>,
    /// Unlinked or replaced; kept so its number is never reused.
    pub removed: bool,
}

/// `Clone` keeps every number: a clone of the grant's tree numbers its
/// nodes as the view's tree does (an undo rebuilds the view from one).
#[derive(Clone, Debug)]
pub struct Tree {
    /// `nodes[ino - 1]`; the root is first.
    nodes: Vec<Node>,
    live: usize,
    /// The other names of each file that has more than one.
    links: HashMap<Ino, Vec<Ino>>,
    /// The file each of those names is a name of.
    link_of: HashMap<Ino, Ino>,
    /// The live file (or directory, or symlink) holding each overlay object.
    objects: HashMap<u64, Ino>,
}

impl Tree {
    fn empty() -> Tree {
        Tree {
            nodes: vec![Node {
                parent: ROOT,
                name: "".into(),
                kind: Kind::Dir,
                origin: Origin::InPlace,
                children: Vec::new(),
                removed: false,
            }],
            live: 1,
            links: HashMap::new(),
            link_of: HashMap::new(),
            objects: HashMap::new(),
        }
    }

    /// Builds the tree from a grant's file list (sorted by path, as grants are).
    pub fn from_files(files: &[FileMatch]) -> Tree {
        let mut tree = Tree::empty();
        // The directory chain of the previous path: paths sharing a prefix
        // are adjacent in sorted order, so each directory is created once.
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
                let ino = tree.push_unsorted(parent, seg, Kind::Dir, Origin::InPlace);
                chain.push(((*seg).into(), ino));
            }
            let parent = chain.last().map_or(ROOT, |(_, ino)| *ino);
            let kind = if f.symlink { Kind::Symlink } else { Kind::File };
            tree.push_unsorted(parent, leaf, kind, Origin::InPlace);
        }
        for i in 0..tree.nodes.len() {
            let mut children = std::mem::take(&mut tree.nodes[i].children);
            children.sort_by(|a, b| tree.name(*a).cmp(tree.name(*b)));
            tree.nodes[i].children = children;
        }
        tree
    }

    /// The number the next node will get.
    pub fn next_ino(&self) -> Ino {
        self.nodes.len() as Ino + 1
    }

    /// Makes the next node's number at least `next`, by numbers never
    /// used: a tree that replaces another in a live view (an undo) must not
    /// give a number the kernel still holds to another node.
    pub fn skip_to(&mut self, next: Ino) {
        while self.next_ino() < next {
            self.nodes.push(Node {
                parent: ROOT,
                name: "".into(),
                kind: Kind::File,
                origin: Origin::InPlace,
                children: Vec::new(),
                removed: true,
            });
        }
    }

    /// Appends a node (not yet linked into its parent) and returns its number.
    fn push(&mut self, parent: Ino, name: &str, kind: Kind, origin: Origin) -> Ino {
        let ino = self.nodes.len() as Ino + 1;
        if let Origin::Upper(o) = origin {
            self.index_object(o, ino);
        }
        self.nodes.push(Node {
            parent,
            name: name.into(),
            kind,
            origin,
            children: Vec::new(),
            removed: false,
        });
        self.live += 1;
        ino
    }

    fn push_unsorted(&mut self, parent: Ino, name: &str, kind: Kind, origin: Origin) -> Ino {
        let ino = self.push(parent, name, kind, origin);
        self.node_mut(parent).children.push(ino);
        ino
    }

    /// A live node.
    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes
            .get(ino.checked_sub(1)? as usize)
            .filter(|n| !n.removed)
    }

    /// Any node ever handed out, removed or not (for open handles).
    pub fn get_any(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(ino.checked_sub(1)? as usize)
    }

    fn node_mut(&mut self, ino: Ino) -> &mut Node {
        &mut self.nodes[(ino - 1) as usize]
    }

    fn name(&self, ino: Ino) -> &str {
        self.get_any(ino).map_or("", |n| &n.name)
    }

    /// Live nodes, the root included.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn slot(&self, parent: Ino, name: &str) -> Option<Result<usize, usize>> {
        let dir = self.get(parent)?;
        Some(dir.children.binary_search_by(|c| self.name(*c).cmp(name)))
    }

    /// Where `name` stands among `parent`'s children (sorted by name).
    pub fn index_of(&self, parent: Ino, name: &str) -> Option<usize> {
        self.slot(parent, name)?.ok()
    }

    /// The child of directory `parent` called `name`.
    pub fn child(&self, parent: Ino, name: &str) -> Option<Ino> {
        let i = self.slot(parent, name)?.ok()?;
        self.get(parent).map(|d| d.children[i])
    }

    /// The node at a relative path (`""` is the root).
    pub fn lookup_path(&self, path: &str) -> Option<Ino> {
        if path.is_empty() {
            return Some(ROOT);
        }
        path.split('/')
            .try_fold(ROOT, |ino, seg| self.child(ino, seg))
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

    /// The host path a node reads from, if it comes from the host.
    pub fn host_path(&self, ino: Ino) -> Option<String> {
        match &self.get(ino)?.origin {
            Origin::InPlace => self.path(ino),
            Origin::Host(p) => Some(p.to_string()),
            Origin::Upper(_) => None,
        }
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

    /// The file a node is a name of: itself, or the file it is a hard link to.
    pub fn inode_of(&self, ino: Ino) -> Ino {
        self.link_of.get(&ino).copied().unwrap_or(ino)
    }

    /// How many names file `ino` has in the view (0 once all are gone).
    pub fn nlink(&self, ino: Ino) -> u32 {
        match self.get(ino) {
            Some(_) => 1 + self.links.get(&ino).map_or(0, |l| l.len() as u32),
            None => 0,
        }
    }

    /// The live node holding overlay object `obj` (a file's own node).
    pub fn holder(&self, obj: u64) -> Option<Ino> {
        self.objects
            .get(&obj)
            .copied()
            .filter(|i| self.get(*i).is_some())
    }

    /// Adds `name` under `parent` as another name of file `ino` (a hard
    /// link); `None` unless `ino` names a live regular file and the name is
    /// free. Returns the new name's node.
    pub fn link(&mut self, ino: Ino, parent: Ino, name: &str) -> Option<Ino> {
        let file = self.inode_of(ino);
        let n = self.get(file).filter(|n| n.kind == Kind::File)?;
        let origin = n.origin.clone();
        let Err(at) = self.slot(parent, name)? else {
            return None;
        };
        let alias = self.push(parent, name, Kind::File, origin);
        self.link_of.insert(alias, file);
        self.node_mut(parent).children.insert(at, alias);
        self.links.entry(file).or_default().push(alias);
        Some(alias)
    }

    /// Adds a node named `name` under `parent`; the caller checked it is free.
    pub fn insert(&mut self, parent: Ino, name: &str, kind: Kind, origin: Origin) -> Option<Ino> {
        let Err(at) = self.slot(parent, name)? else {
            return None;
        };
        let ino = self.push(parent, name, kind, origin);
        self.node_mut(parent).children.insert(at, ino);
        Some(ino)
    }

    /// Unhooks `ino` from its parent, keeping its subtree attached to it.
    fn unhook(&mut self, ino: Ino) {
        let parent = self.nodes[(ino - 1) as usize].parent;
        let name = self.name(ino).to_string();
        if let Some(Ok(i)) = self.slot(parent, &name) {
            self.node_mut(parent).children.remove(i);
        }
    }

    /// Removes `ino` and its whole subtree (which callers keep empty). A
    /// file removed by one name lives on under its other names.
    pub fn remove(&mut self, ino: Ino) {
        if ino == ROOT || self.get(ino).is_none() {
            return;
        }
        self.unhook(ino);
        let mut gone = Vec::new();
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            let n = self.node_mut(i);
            n.removed = true;
            stack.extend(std::mem::take(&mut n.children));
            self.live -= 1;
            gone.push(i);
        }
        for &i in &gone {
            let Some(file) = self.link_of.remove(&i) else {
                continue;
            };
            if let Some(names) = self.links.get_mut(&file) {
                names.retain(|a| *a != i);
            }
        }
        for &i in &gone {
            match self.links.remove(&i) {
                Some(mut names) if !names.is_empty() => {
                    let name = names.remove(0);
                    self.take_place(i, name);
                    if !names.is_empty() {
                        self.links.insert(i, names);
                    }
                }
                _ => {
                    if let Origin::Upper(o) = self.nodes[(i - 1) as usize].origin {
                        if self.objects.get(&o) == Some(&i) {
                            self.objects.remove(&o);
                        }
                    }
                }
            }
        }
    }

    /// File `file`, removed by its own name, takes the place of `name`, one
    /// of its other names, which goes: the file keeps its number.
    fn take_place(&mut self, file: Ino, name: Ino) {
        let (parent, leaf, origin) = {
            let n = &self.nodes[(name - 1) as usize];
            (n.parent, n.name.clone(), n.origin.clone())
        };
        if let Some(Ok(at)) = self.slot(parent, &leaf) {
            self.node_mut(parent).children[at] = file;
        }
        self.node_mut(name).removed = true;
        self.link_of.remove(&name);
        let f = self.node_mut(file);
        f.parent = parent;
        f.name = leaf;
        f.origin = origin;
        f.removed = false;
    }

    /// Before a subtree moves, its untouched host nodes remember where on
    /// the host they read from.
    fn pin_origins(&mut self, ino: Ino) {
        for i in self.subtree(ino) {
            if self.get(i).is_some_and(|n| n.origin == Origin::InPlace) {
                if let Some(p) = self.path(i) {
                    self.node_mut(i).origin = Origin::Host(p.into());
                }
            }
        }
    }

    /// A moved host node that lands back on its own path is in place again.
    fn unpin_origins(&mut self, ino: Ino) {
        for i in self.subtree(ino) {
            let back = match (self.get(i).map(|n| &n.origin), self.path(i)) {
                (Some(Origin::Host(h)), Some(p)) => **h == *p,
                _ => false,
            };
            if back {
                self.node_mut(i).origin = Origin::InPlace;
            }
        }
    }

    /// Moves `ino` to `new_parent/new_name`; the caller removed any node there.
    pub fn move_to(&mut self, ino: Ino, new_parent: Ino, new_name: &str) {
        self.pin_origins(ino);
        self.unhook(ino);
        let n = self.node_mut(ino);
        n.parent = new_parent;
        n.name = new_name.into();
        if let Some(Err(at)) = self.slot(new_parent, new_name) {
            self.node_mut(new_parent).children.insert(at, ino);
        }
        self.unpin_origins(ino);
    }

    /// Swaps the places of two nodes (RENAME_EXCHANGE).
    pub fn exchange(&mut self, a: Ino, b: Ino) {
        let (pa, na) = (
            self.nodes[(a - 1) as usize].parent,
            self.name(a).to_string(),
        );
        let (pb, nb) = (
            self.nodes[(b - 1) as usize].parent,
            self.name(b).to_string(),
        );
        self.pin_origins(a);
        self.pin_origins(b);
        self.unhook(a);
        self.unhook(b);
        for (ino, parent, name) in [(a, pb, nb), (b, pa, na)] {
            let n = self.node_mut(ino);
            n.parent = parent;
            n.name = name.as_str().into();
            if let Some(Err(at)) = self.slot(parent, &name) {
                self.node_mut(parent).children.insert(at, ino);
            }
        }
        self.unpin_origins(a);
        self.unpin_origins(b);
    }

    /// Marks a subtree as in place on the host (a direct view moved the
    /// host entries along with the nodes).
    pub fn mark_in_place(&mut self, ino: Ino) {
        for i in self.subtree(ino) {
            self.set_origin(i, Origin::InPlace);
        }
    }

    pub fn set_origin(&mut self, ino: Ino, origin: Origin) {
        let Some(n) = ino
            .checked_sub(1)
            .and_then(|i| self.nodes.get_mut(i as usize))
        else {
            return;
        };
        let old = std::mem::replace(&mut n.origin, origin.clone());
        let own = !self.link_of.contains_key(&ino);
        if let Origin::Upper(o) = old {
            if self.objects.get(&o) == Some(&ino) {
                self.objects.remove(&o);
            }
        }
        if let (Origin::Upper(o), true) = (origin, own) {
            self.index_object(o, ino);
        }
    }

    /// Records `ino` as the holder of object `o`, unless a live node holds it.
    fn index_object(&mut self, o: u64, ino: Ino) {
        if self.holder(o).is_none() {
            self.objects.insert(o, ino);
        }
    }

    /// `ino` and every node beneath it, parents before children.
    pub fn subtree(&self, ino: Ino) -> Vec<Ino> {
        let mut out = vec![ino];
        let mut i = 0;
        while i < out.len() {
            if let Some(n) = self.get(out[i]) {
                out.extend(n.children.iter().copied());
            }
            i += 1;
        }
        out
    }

    /// Whether `anc` is `ino` or one of its ancestors.
    pub fn is_ancestor(&self, anc: Ino, ino: Ino) -> bool {
        let mut cur = ino;
        loop {
            if cur == anc {
                return true;
            }
            if cur == ROOT {
                return false;
            }
            match self.get_any(cur) {
                Some(n) => cur = n.parent,
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of `dir`'s children, in their order.
    fn child_names(t: &Tree, dir: Ino) -> Vec<&str> {
        let children = &t.get(dir).unwrap().children;
        children.iter().map(|i| t.name(*i)).collect()
    }
    use crate::grant::FileType;

    fn f(p: &str) -> FileMatch {
        FileMatch {
            path: p.into(),
            file_type: FileType::Other,
            size_bytes: 0,
            symlink: false,
        }
    }

    fn sample() -> Tree {
        let files: Vec<_> = ["README.md", "a/b/c.txt", "a/b/d.txt", "a/e.txt", "z/y/x"]
            .into_iter()
            .map(f)
            .collect();
        Tree::from_files(&files)
    }

    #[test]
    fn builds_only_dirs_on_granted_paths() {
        let t = sample();
        // root, README.md, a, a/b, c, d, e, z, z/y, x
        assert_eq!(t.len(), 10);
        let a = t.child(ROOT, "a").unwrap();
        let b = t.child(a, "b").unwrap();
        assert_eq!(t.get(b).unwrap().kind, Kind::Dir);
        let c = t.child(b, "c.txt").unwrap();
        assert_eq!(t.path(c).unwrap(), "a/b/c.txt");
        assert_eq!(t.lookup_path("a/b/c.txt"), Some(c));
        assert_eq!(t.path(ROOT).unwrap(), "");
        assert_eq!(t.child(ROOT, "missing"), None);
        assert_eq!(t.child(c, "x"), None);
        assert_eq!(t.subdirs(ROOT), 2);
        assert_eq!(child_names(&t, a), vec!["b", "e.txt"]);
    }

    #[test]
    fn mutations_keep_children_sorted_and_numbers_unique() {
        let mut t = sample();
        let a = t.lookup_path("a").unwrap();
        let n = t.insert(a, "aa", Kind::File, Origin::Upper(7)).unwrap();
        assert_eq!(t.insert(a, "aa", Kind::File, Origin::Upper(8)), None);
        assert_eq!(child_names(&t, a), vec!["aa", "b", "e.txt"]);
        assert_eq!(t.host_path(n), None);

        // Renaming a directory keeps its subtree and inode numbers.
        let b = t.lookup_path("a/b").unwrap();
        let c = t.lookup_path("a/b/c.txt").unwrap();
        t.move_to(b, ROOT, "moved");
        assert_eq!(t.lookup_path("moved/c.txt"), Some(c));
        assert_eq!(t.lookup_path("a/b"), None);
        assert_eq!(t.host_path(c).unwrap(), "a/b/c.txt");
        assert_eq!(t.get(c).unwrap().origin, Origin::Host("a/b/c.txt".into()));
        // Moving back puts it in place again.
        let a2 = t.lookup_path("a").unwrap();
        t.move_to(b, a2, "b");
        assert_eq!(t.get(c).unwrap().origin, Origin::InPlace);
        t.move_to(b, ROOT, "moved");
        assert!(t.is_ancestor(b, c));
        assert!(!t.is_ancestor(c, b));
        assert_eq!(t.subtree(b).len(), 3);

        let before = t.len();
        t.remove(b);
        assert_eq!(t.len(), before - 3);
        assert!(t.get(c).is_none() && t.get_any(c).is_some());
        let again = t
            .insert(ROOT, "moved", Kind::Dir, Origin::Upper(9))
            .unwrap();
        assert!(again > c, "numbers are never reused");

        let readme = t.lookup_path("README.md").unwrap();
        let z = t.lookup_path("z").unwrap();
        t.exchange(readme, z);
        assert_eq!(t.lookup_path("README.md"), Some(z));
        assert_eq!(t.lookup_path("z"), Some(readme));
        assert!(t.lookup_path("README.md/y/x").is_some());
        assert_eq!(t.host_path(readme).unwrap(), "README.md");
        assert_eq!(t.path(readme).unwrap(), "z");
    }

    #[test]
    fn hard_links_share_one_number_and_outlive_their_first_name() {
        let mut t = sample();
        let a = t.lookup_path("a").unwrap();
        let f = t.insert(a, "f", Kind::File, Origin::Upper(7)).unwrap();
        assert_eq!(t.holder(7), Some(f));
        let g = t.link(f, ROOT, "g").unwrap();
        // Linking through another name links the file itself.
        let h = t.link(g, a, "h").unwrap();
        assert_eq!([t.inode_of(f), t.inode_of(g), t.inode_of(h)], [f, f, f]);
        assert_eq!((t.nlink(f), t.holder(7)), (3, Some(f)));
        assert_eq!(t.get(h).unwrap().origin, Origin::Upper(7));
        assert_eq!(t.link(f, ROOT, "g"), None, "the name is taken");
        assert_eq!(t.link(a, ROOT, "dir2"), None, "a directory has one name");
        let live = t.len();

        // The file's own name goes: the file takes the place of "g".
        t.remove(f);
        assert_eq!(t.len(), live - 1);
        assert_eq!(t.lookup_path("g"), Some(f));
        assert_eq!(t.path(f).as_deref(), Some("g"));
        assert!(t.get(g).is_none(), "the name's own node is gone");
        assert_eq!(t.lookup_path("a/f"), None);
        assert_eq!((t.nlink(f), t.holder(7)), (2, Some(f)));
        // A directory holding a name goes with it; the file stays.
        t.remove(a);
        assert_eq!(t.nlink(f), 1);
        assert_eq!(t.lookup_path("g"), Some(f));
        t.remove(f);
        assert_eq!((t.nlink(f), t.holder(7)), (0, None));
        assert!(t.get_any(f).is_some_and(|n| n.removed));
    }
}
