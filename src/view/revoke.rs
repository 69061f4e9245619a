//! Revocation (`wopfs revoke`): once [`View::revoke`] is called, the view
//! shows nothing: every request answers ENOENT (`View::live`), whatever the
//! grant's expiry. What the kernel cached before is the adapter's to drop
//! (`fuse::invalidate`, with the names this returns).

use std::sync::atomic::Ordering;

use super::View;
use crate::tree::{Ino, ROOT};

/// A name the kernel may have cached: `name` in directory `parent`, the
/// node `ino`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub parent: Ino,
    pub name: String,
    pub ino: Ino,
}

impl View {
    /// Ends the view now: every later request answers ENOENT. Returns every
    /// name the view held (parents before children), for the adapter to
    /// invalidate in the kernel's caches.
    pub fn revoke(&self) -> Vec<Known> {
        self.revoked.store(true, Ordering::SeqCst);
        let tree = self.read_tree();
        tree.subtree(ROOT)
            .into_iter()
            .filter(|&ino| ino != ROOT)
            .filter_map(|ino| {
                let n = tree.get(ino)?;
                Some(Known {
                    parent: n.parent,
                    name: n.name.to_string(),
                    ino,
                })
            })
            .collect()
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use crate::error::Errno;
    use crate::grant::{resolve, GrantRequest};
    use crate::policy::{Mode, Policy};
    use crate::tree::ROOT;
    use crate::view::{Lookup, View, ViewOptions};

    #[test]
    fn a_revoked_view_answers_enoent_to_everything() {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("d")).unwrap();
        std::fs::write(host.path().join("a.txt"), "a").unwrap();
        std::fs::write(host.path().join("d/b.txt"), "b").unwrap();
        let req = GrantRequest {
            ..GrantRequest::for_test(host.path(), Mode::ReadOnly)
        };
        let clock = crate::clock::SystemClock;
        let grant = resolve(&req, &Policy::builtin_default().unwrap(), &clock).unwrap();
        let view = View::new(&grant, None, ViewOptions::default()).unwrap();
        let Ok(Lookup::Found(a)) = view.lookup(ROOT, OsStr::new("a.txt")) else {
            panic!("a.txt is granted");
        };
        let fh = view
            .open(a.attr.ino, libc::O_RDONLY, |_| {
                std::io::Result::<()>::Err(std::io::ErrorKind::Unsupported.into())
            })
            .unwrap()
            .fh;
        assert!(!view.is_revoked());

        let known = view.revoke();
        let mut names: Vec<&str> = known.iter().map(|k| k.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a.txt", "b.txt", "d"]);
        assert!(view.is_revoked());
        for k in &known {
            assert_eq!(view.getattr(k.ino).unwrap_err(), Errno::ENOENT);
        }
        assert_eq!(view.getattr(ROOT).unwrap_err(), Errno::ENOENT);
        assert_eq!(view.opendir(ROOT).unwrap_err(), Errno::ENOENT);
        // A handle opened before reads nothing more.
        assert_eq!(view.read(fh, 0, 10).unwrap_err(), Errno::ENOENT);
        assert!(matches!(
            view.lookup(ROOT, OsStr::new("a.txt")),
            Ok(Lookup::Absent { .. })
        ));
    }
}
