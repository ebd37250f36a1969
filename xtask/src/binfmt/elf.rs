//! Just enough ELF reading to tell a static interpreter from a dynamic one:
//! a dynamic executable has a `PT_INTERP` program header naming its loader,
//! which does not exist inside a chroot or the Nix build sandbox.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Debug, PartialEq)]
pub enum Linkage {
    Static,
    /// Dynamic, with the loader it needs.
    Dynamic(String),
    NotElf,
}

const PT_INTERP: u32 = 3;

/// The linkage of the executable at `path` (following symlinks).
pub fn linkage(path: &Path) -> std::io::Result<Linkage> {
    let mut f = std::fs::File::open(path)?;
    let mut head = vec![0u8; 64];
    let n = read_up_to(&mut f, &mut head)?;
    head.truncate(n);
    let Some(h) = Header::parse(&head) else {
        return Ok(Linkage::NotElf);
    };
    let mut table = vec![0u8; h.phentsize * h.phnum];
    f.seek(SeekFrom::Start(h.phoff))?;
    if read_up_to(&mut f, &mut table)? < table.len() {
        return Ok(Linkage::NotElf);
    }
    for ph in table.chunks(h.phentsize) {
        if h.u32(ph, 0) == PT_INTERP {
            let (off, size) = if h.is64 {
                (h.u64(ph, 8), h.u64(ph, 32))
            } else {
                (h.u32(ph, 4) as u64, h.u32(ph, 16) as u64)
            };
            let mut name = vec![0u8; size.min(4096) as usize];
            f.seek(SeekFrom::Start(off))?;
            let n = read_up_to(&mut f, &mut name)?;
            let name = String::from_utf8_lossy(&name[..n]);
            return Ok(Linkage::Dynamic(name.trim_end_matches('\0').to_string()));
        }
    }
    Ok(Linkage::Static)
}

struct Header {
    is64: bool,
    le: bool,
    phoff: u64,
    phentsize: usize,
    phnum: usize,
}

impl Header {
    fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < 52 || &b[..4] != b"\x7fELF" {
            return None;
        }
        let is64 = match b[4] {
            1 => false,
            2 => true,
            _ => return None,
        };
        let mut h = Header {
            is64,
            le: b[5] == 1,
            phoff: 0,
            phentsize: 0,
            phnum: 0,
        };
        if is64 {
            if b.len() < 64 {
                return None;
            }
            h.phoff = h.u64(b, 32);
            h.phentsize = h.u16(b, 54) as usize;
            h.phnum = h.u16(b, 56) as usize;
        } else {
            h.phoff = h.u32(b, 28) as u64;
            h.phentsize = h.u16(b, 42) as usize;
            h.phnum = h.u16(b, 44) as usize;
        }
        let min = if is64 { 56 } else { 32 };
        (h.phentsize >= min && h.phnum <= 256).then_some(h)
    }

    fn u16(&self, b: &[u8], at: usize) -> u16 {
        let a = [b[at], b[at + 1]];
        if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }

    fn u32(&self, b: &[u8], at: usize) -> u32 {
        let a = b[at..at + 4].try_into().unwrap();
        if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }

    fn u64(&self, b: &[u8], at: usize) -> u64 {
        let a = b[at..at + 8].try_into().unwrap();
        if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_static() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("probe");
        std::fs::write(&p, crate::binfmt::probe::elf()).unwrap();
        assert_eq!(linkage(&p).unwrap(), Linkage::Static);
    }

    #[test]
    fn a_dynamic_program_names_its_loader() {
        // Any dynamically linked program of the machine running the tests.
        let sh = Path::new("/bin/sh");
        match linkage(sh).unwrap() {
            Linkage::Dynamic(loader) => assert!(loader.contains("ld-"), "{loader}"),
            other => panic!("/bin/sh should be dynamic, got {other:?}"),
        }
    }

    #[test]
    fn text_is_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("script");
        std::fs::write(&p, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(linkage(&p).unwrap(), Linkage::NotElf);
    }
}
