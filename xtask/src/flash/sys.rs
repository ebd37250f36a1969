//! Thin wrappers over the Linux calls flashing needs: aligned buffers, block
//! device ioctls, opening with `O_EXCL | O_DIRECT`, Ctrl-C.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment for `O_DIRECT` buffers (any logical block size up to 4 KiB).
pub const ALIGN: usize = 4096;

/// A zeroed, page-aligned heap buffer.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// The buffer is plain owned memory.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, ALIGN).expect("buffer layout");
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuf { ptr, len }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        unsafe { dealloc(self.ptr, Layout::from_size_align(self.len, ALIGN).unwrap()) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

const BLKRRPART: libc::c_ulong = 0x125f;
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// The device's size in bytes, from the kernel.
pub fn device_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// The logical block size: `O_DIRECT` offsets and lengths are multiples of it.
pub fn logical_block_size(f: &File) -> usize {
    let mut n: libc::c_int = 0;
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKSSZGET, &mut n) } < 0 || n <= 0 {
        return 512;
    }
    n as usize
}

/// Asks the kernel to read the new partition table (errors are not fatal).
pub fn reread_partitions(f: &File) -> bool {
    unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART) == 0 }
}

/// Opens a block device for writing, exclusively (`O_EXCL`: fails with EBUSY
/// while it is mounted or held), with `O_DIRECT` when the device allows it.
/// The bool says whether `O_DIRECT` is on.
pub fn open_exclusive(path: &Path, write: bool) -> io::Result<(File, bool)> {
    let open = |direct: bool| {
        let flags = libc::O_EXCL | libc::O_CLOEXEC | if direct { libc::O_DIRECT } else { 0 };
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(flags)
            .open(path)
    };
    match open(true) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(false).map(|f| (f, false)),
        r => r.map(|f| (f, true)),
    }
}

/// Flushes the device's own write cache (fsync on a block device sends a flush).
pub fn flush(f: &File) -> io::Result<()> {
    f.sync_all()
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn stdin_is_tty() -> bool {
    unsafe { libc::isatty(0) == 1 }
}

pub fn stderr_is_tty() -> bool {
    unsafe { libc::isatty(2) == 1 }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on Ctrl-C (SIGINT) and SIGTERM only set a flag the writer checks.
pub fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Peak resident memory of a finished child (kB), waiting for it: `(exit ok, kB)`.
pub fn wait_with_rusage(pid: u32) -> io::Result<(bool, u64)> {
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, ru.ru_maxrss as u64))
}

const BLKFLSBUF: libc::c_ulong = 0x1261;

/// Drops the device's cached pages so reads come from the device itself.
pub fn drop_cache(f: &File) {
    unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF, 0) };
}

const LOOP_GET_STATUS64: libc::c_ulong = 0x4c05;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// What a loop device is backed by, from the kernel (`LOOP_GET_STATUS64`):
/// the backing file's `st_dev`, `st_ino` and `st_rdev` (non-zero when the
/// backing is a block device). Right even when `loop/backing_file` is stale.
pub fn loop_status(path: &Path) -> io::Result<(u64, u64, u64)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(f.as_raw_fd(), LOOP_GET_STATUS64, &mut info) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((info.lo_device, info.lo_inode, info.lo_rdevice))
}

/// `(major, minor)` of an encoded device number (`st_dev`, `st_rdev`).
pub fn split_dev(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}
