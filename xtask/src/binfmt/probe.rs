//! The proof that aarch64 programs run: a hand-made static aarch64 Linux
//! program of 211 bytes, run directly and as the builder of a one-off
//! aarch64-linux Nix derivation.
//!
//! The program writes [`MESSAGE`] to stdout, or, given one argument, to a
//! new file of that name (so as a Nix builder it writes `$out`). It exits 0
//! when the whole message was written, else 1.

/// What the probe writes.
pub const MESSAGE: &[u8] = b"hello from aarch64\n";

const BASE: u64 = 0x40_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

/// The machine code, one 32-bit instruction per word, then the message.
/// Linux aarch64 syscalls: openat 56, write 64, exit 93.
fn code() -> Vec<u32> {
    let len = MESSAGE.len() as u32;
    vec![
        0xf940_03e0,             //  0: ldr  x0, [sp]          argc
        0xf100_081f,             //  4: cmp  x0, #2
        0xd280_0020,             //  8: mov  x0, #1            fd = stdout
        0x5400_00eb,             //  c: b.lt 0x28              no argument: write
        0x9280_0c60,             // 10: mov  x0, #-100         AT_FDCWD
        0xf940_0be1,             // 14: ldr  x1, [sp, #16]     argv[1]
        0xd280_4822,             // 18: mov  x2, #0x241        O_WRONLY|O_CREAT|O_TRUNC
        0xd280_3483,             // 1c: mov  x3, #0644
        0xd280_0708,             // 20: mov  x8, #56           openat
        0xd400_0001,             // 24: svc  #0                x0 = fd
        0x1000_0101,             // 28: adr  x1, 0x48          the message
        0xd280_0002 | len << 5,  // 2c: mov  x2, #len
        0xd280_0808,             // 30: mov  x8, #64           write
        0xd400_0001,             // 34: svc  #0
        0xf100_001f | len << 10, // 38: cmp  x0, #len
        0x9a9f_07e0,             // 3c: cset x0, ne            status 1 unless all written
        0xd280_0ba8,             // 40: mov  x8, #93           exit
        0xd400_0001,             // 44: svc  #0
    ]
}

/// The whole ELF file: header, one PT_LOAD segment mapping the file, code.
pub fn elf() -> Vec<u8> {
    let mut body: Vec<u8> = code().iter().flat_map(|w| w.to_le_bytes()).collect();
    body.extend_from_slice(MESSAGE);
    let total = (EHDR + PHDR + body.len()) as u64;
    let mut f = Vec::with_capacity(total as usize);
    // ELF header
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\x00"); // 64-bit, little endian, v1, SysV ABI
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&0xb7u16.to_le_bytes()); // e_machine: EM_AARCH64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(BASE + (EHDR + PHDR) as u64).to_le_bytes()); // e_entry
    f.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    f.extend_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // no section headers
    // Program header: PT_LOAD, readable and executable, the whole file at BASE
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&5u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&BASE.to_le_bytes());
    f.extend_from_slice(&BASE.to_le_bytes());
    f.extend_from_slice(&total.to_le_bytes());
    f.extend_from_slice(&total.to_le_bytes());
    f.extend_from_slice(&0x1000u64.to_le_bytes());
    f.extend_from_slice(&body);
    f
}

/// A Nix function of the probe's path and a nonce: a derivation for
/// aarch64-linux whose builder is the probe, writing the message to `$out`.
/// The nonce makes each run a new derivation, so it really builds.
pub const NIX_EXPR: &str = r#"{ probe, nonce }:
derivation {
  name = "aarch64-probe";
  system = "aarch64-linux";
  builder = builtins.path {
    path = /. + probe;
    name = "aarch64-probe-builder";
  };
  args = [ (builtins.placeholder "out") ];
  inherit nonce;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binfmt::entry;

    #[test]
    fn layout() {
        let f = elf();
        assert_eq!(f.len(), 211);
        assert_eq!(f.len(), EHDR + PHDR + code().len() * 4 + MESSAGE.len());
        // The message sits where `adr x1, 0x48` points.
        assert_eq!(&f[EHDR + PHDR + 0x48..], MESSAGE);
        // The entry point is the first instruction.
        let entry = u64::from_le_bytes(f[24..32].try_into().unwrap());
        assert_eq!(entry, BASE + (EHDR + PHDR) as u64);
        // The kernel's aarch64 rule claims it.
        assert!(
            f.iter()
                .zip(entry::MAGIC.iter().zip(entry::MASK))
                .all(|(b, (m, k))| (b ^ m) & k == 0)
        );
    }
}
