//! e2fsprogs' debugfs, which reads and writes an ext4 filesystem inside an
//! image file without mounting it (no root needed): where it is, and what
//! its `stat` says.

use std::path::Path;

use crate::exec;

/// debugfs: on PATH, or in /usr/sbin or /sbin, which are not on a normal
/// user's PATH on Debian.
pub fn find() -> Option<String> {
    if exec::have("debugfs") {
        return Some("debugfs".to_string());
    }
    ["/usr/sbin/debugfs", "/sbin/debugfs"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .map(str::to_string)
}

/// Mode, uid, gid and size from `debugfs -R 'stat <file>'`.
pub fn parse_stat(text: &str) -> Option<(u32, u32, u32, u64)> {
    let after = |key: &str| -> Option<String> {
        let i = text.find(key)? + key.len();
        text[i..].split_whitespace().next().map(str::to_string)
    };
    let mode = u32::from_str_radix(&after("Mode:")?, 8).ok()?;
    let uid = after("User:")?.parse().ok()?;
    let gid = after("Group:")?.parse().ok()?;
    let size = after("Size:")?.parse().ok()?;
    Some((mode, uid, gid, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_output() {
        let text = "Inode: 15   Type: regular    Mode:  0600   Flags: 0x80000\nGeneration: 0    Version: 0x00000000:00000000\nUser:     0   Group:     0   Project:     0   Size: 11\n";
        assert_eq!(parse_stat(text), Some((0o600, 0, 0, 11)));
        assert_eq!(parse_stat("Inode: 15"), None);
    }
}
