//! SSH public keys in authorized_keys form: `[options] type base64 [comment]`.

/// Key types OpenSSH accepts in authorized_keys today.
pub const TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

#[derive(Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: String,
    /// The base64 blob: two lines with the same blob are the same key.
    pub blob: String,
    pub comment: String,
}

/// Parses one authorized_keys line; the error says why it is not a usable key.
pub fn parse_line(line: &str) -> Result<PublicKey, String> {
    let line = line.trim();
    if line.contains("PRIVATE KEY") {
        return Err("this is a private key: never share it; use the .pub file next to it".into());
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = words
        .iter()
        .position(|w| TYPES.contains(w) || *w == "ssh-dss")
    else {
        return Err(format!(
            "no known key type (expected one of {})",
            TYPES.join(", ")
        ));
    };
    let kind = words[at];
    if kind == "ssh-dss" {
        return Err("DSA keys are no longer accepted by OpenSSH; make an ed25519 key with `ssh-keygen -t ed25519`".into());
    }
    let Some(blob) = words.get(at + 1) else {
        return Err("the key data after the type is missing".into());
    };
    let bytes = decode_base64(blob).ok_or("the key data is not base64 (a placeholder?)")?;
    // The blob starts with the key type again, as a length-prefixed string.
    let inner = bytes
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| bytes.get(4..4 + n))
        .ok_or("the key data is too short")?;
    if inner != kind.as_bytes() {
        return Err(format!(
            "the key data says `{}` but the line says `{kind}`",
            String::from_utf8_lossy(inner)
        ));
    }
    Ok(PublicKey {
        kind: kind.to_string(),
        blob: blob.to_string(),
        comment: words[at + 2..].join(" "),
    })
}

/// The modulus size in bits of an `ssh-rsa` key, from its blob (the
/// strings `ssh-rsa`, e and n, each length-prefixed); `None` for other keys.
pub fn rsa_bits(key: &PublicKey) -> Option<usize> {
    if key.kind != "ssh-rsa" {
        return None;
    }
    let bytes = decode_base64(&key.blob)?;
    let mut rest = bytes.as_slice();
    let mut next = || -> Option<&[u8]> {
        let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let field = rest.get(4..4 + n)?;
        rest = &rest[4 + n..];
        Some(field)
    };
    let (_kind, _e, n) = (next()?, next()?, next()?);
    // An mpint: big-endian, a leading zero byte when the top bit is set.
    let n: Vec<u8> = n.iter().copied().skip_while(|&b| b == 0).collect();
    let top = *n.first()?;
    Some((n.len() - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// The size under which an RSA key is too weak to trust (NIST SP 800-57:
/// 2048-bit RSA is only good until 2030; OpenSSH's ssh-keygen makes 3072).
pub const RSA_MIN_BITS: usize = 3072;

/// Standard base64 with padding, as OpenSSH writes it.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.as_bytes();
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let pad = s.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        let mut count = 0;
        for &c in chunk {
            if c == b'=' {
                n <<= 6;
            } else {
                n = (n << 6) | val(c)?;
                count += 1;
            }
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..count - 1]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real ed25519 public key (made for these tests).
    pub const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOB0fvttWs5Ovlk2OGGce9OYz0HlgTy8j9PN4mi8qGPq test@example";

    #[test]
    fn accepts_real_key() {
        let k = parse_line(ED25519).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.comment, "test@example");
    }

    #[test]
    fn accepts_options_prefix() {
        let line = format!("from=\"10.0.0.0/8\" {ED25519}");
        assert!(parse_line(&line).is_ok());
    }

    #[test]
    fn refuses_private_key() {
        let e = parse_line("-----BEGIN OPENSSH PRIVATE KEY-----").unwrap_err();
        assert!(e.contains("private key"));
    }

    #[test]
    fn refuses_placeholder() {
        let e = parse_line("ssh-ed25519 AAAA...your-public-key").unwrap_err();
        assert!(e.contains("not base64"), "{e}");
    }

    #[test]
    fn refuses_mismatched_type() {
        let blob = ED25519.split(' ').nth(1).unwrap();
        let e = parse_line(&format!("ssh-rsa {blob}")).unwrap_err();
        assert!(e.contains("says `ssh-ed25519`"), "{e}");
    }

    #[test]
    fn refuses_unknown_type_and_dsa() {
        assert!(
            parse_line("hello world")
                .unwrap_err()
                .contains("no known key type")
        );
        assert!(parse_line("ssh-dss AAAA").unwrap_err().contains("DSA"));
    }

    #[test]
    fn rsa_modulus_size() {
        // ssh-keygen -t rsa -b 1024 (made for this test).
        let rsa1024 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDFxBpQjp7D8ns+GCo+qh9sSELQH6/9+P4IGuP1IJNOBtssrJHes8AtNl/TTKtzMyxYETJMVe2j9VP8KRo6vaOIt2CkcSfLj9stgjoJaXf6j2diE32ooYy3qkW1D7SiGDu68Ze+ENJ3ze7QhhP8jYT9gIV2SsYnzi45j4qyatwXBQ== t@x";
        let k = parse_line(rsa1024).unwrap();
        assert_eq!(rsa_bits(&k), Some(1024));
        assert_eq!(rsa_bits(&parse_line(ED25519).unwrap()), None);
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("YWJj").unwrap(), b"abc");
        assert!(decode_base64("abc").is_none());
        assert!(decode_base64("a*==").is_none());
    }
}
