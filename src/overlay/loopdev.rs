//! The layer image on a loop device of our own: attached with auto-clear
//! (it goes with its last mount) and direct I/O. The daemon mounts it at
//! the layer dir (`mount_at`); a process that only reads it (`commit`,
//! `status`, `diff`) mounts it *detached* (fsmount without a mountpoint),
//! so the mount lives exactly as long as that process holds its fd: a
//! reader killed at any instant leaves nothing mounted or attached; the
//! mount is reached through `/proc/self/fd/N`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    MountAttrFlags,
};

use crate::error::{Error, IoContext, Result};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// The loop device reads and writes its file with direct I/O: the image's
/// pages are cached once (by the ext4 inside), not twice, which halves the
/// cost of large writes (the kernel falls back to buffered I/O where the
/// file's file system cannot).
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, kernel 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` to a free loop device that detaches itself once its
/// last user (this fd, then the mount) is gone.
pub fn attach(image: &File) -> Result<(OwnedFd, PathBuf)> {
    let ctl = File::open("/dev/loop-control").ctx(|| "opening /dev/loop-control")?;
    for _ in 0..16 {
        // SAFETY: an ioctl without argument on the control device.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(Error::io(
                "finding a free loop device",
                std::io::Error::last_os_error(),
            ));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let fd = rustix::fs::open(
            &dev,
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::io(format!("opening {}", dev.display()), e.into()))?;
        // SAFETY: all-zero is a valid loop_info64 and loop_config.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = image.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        // SAFETY: LOOP_CONFIGURE reads a loop_config of this layout.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), LOOP_CONFIGURE as _, &config) };
        if r == 0 {
            return Ok((fd, dev));
        }
        let e = std::io::Error::last_os_error();
        // Taken by another process between the two calls: another one.
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(Error::io(format!("attaching {}", dev.display()), e));
        }
    }
    Err(Error::busy("no free loop device could be taken"))
}

/// Mounts the ext4 `image` detached (`nosuid,nodev`); the mount is freed
/// when the returned fd is closed.
pub fn mount_detached(image: &Path) -> Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .ctx(|| format!("opening {}", image.display()))?;
    let (dev_fd, dev) = attach(&file)?;
    let failed = |what: &str, e: rustix::io::Errno| {
        Error::io(format!("mounting {} ({what})", image.display()), e.into())
    };
    let fs = fsopen("ext4", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| failed("fsopen", e))?;
    fsconfig_set_string(&fs, "source", &dev).map_err(|e| failed("source", e))?;
    fsconfig_create(&fs).map_err(|e| failed("create", e))?;
    let mnt = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| failed("fsmount", e))?;
    // The mount holds the device now; closing ours lets it clear with it.
    drop(dev_fd);
    drop(file);
    Ok(mnt)
}

/// Mounts the ext4 `image` at `dir` (`nosuid,nodev`); the loop device goes
/// when it is unmounted.
pub fn mount_at(image: &Path, dir: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .ctx(|| format!("opening {}", image.display()))?;
    let (_dev_fd, dev) = attach(&file)?;
    rustix::mount::mount(
        &dev,
        dir,
        "ext4",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        None,
    )
    .map_err(|e| {
        Error::io(
            format!(
                "mounting the kernel engine's layer image {} at {}",
                image.display(),
                dir.display()
            ),
            e.into(),
        )
    })
}

/// The path of `rel` inside a detached mount held by this process.
pub fn path_in(mnt: &impl AsFd, rel: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{rel}", mnt.as_fd().as_raw_fd()))
}
