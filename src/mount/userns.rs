//! The namespaces a child process enters between fork and exec (`wopfs
//! run`'s command, the kernel engine's user-namespace probe): raw system
//! calls on data prepared before the fork, nothing that allocates.

fn write_file(path: &[u8], data: &[u8]) -> std::io::Result<()> {
    // SAFETY: NUL-terminated paths prepared by the caller; raw syscalls only.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The namespaces a child enters: a mount namespace, and
/// when not root a user namespace mapping the caller to themselves.
pub struct UserMaps {
    /// (uid_map, gid_map) contents; `None` for root.
    maps: Option<(Vec<u8>, Vec<u8>)>,
}

impl UserMaps {
    pub fn of_caller() -> UserMaps {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        UserMaps {
            maps: (uid != 0).then(|| {
                (
                    format!("{uid} {uid} 1").into_bytes(),
                    format!("{gid} {gid} 1").into_bytes(),
                )
            }),
        }
    }

    /// Unshares the namespaces and makes every mount private. Runs between
    /// fork and exec: raw system calls only.
    pub fn enter(&self) -> std::io::Result<()> {
        let err = |rc: i32| {
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain syscalls on NUL-terminated strings prepared before fork.
        unsafe {
            match &self.maps {
                Some((uid_map, gid_map)) => {
                    err(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
                    write_file(b"/proc/self/setgroups\0", b"deny")?;
                    write_file(b"/proc/self/uid_map\0", uid_map)?;
                    write_file(b"/proc/self/gid_map\0", gid_map)?;
                }
                None => err(libc::unshare(libc::CLONE_NEWNS))?,
            }
            let null = std::ptr::null();
            err(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null.cast(),
            ))?;
        }
        Ok(())
    }
}
