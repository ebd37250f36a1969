//! What pinning knows of the OCI distribution API without a network: image
//! references, the digest of a manifest's bytes, whether a tag runs on a Pi.
//! The client that asks registries over HTTPS (tokens, docker logins) is in
//! `xtask-crypto` (`xtask/crypto/src/registry/`), built on first use.

pub mod reference;

use anyhow::Result;
use sha2::{Digest, Sha256};

use reference::Reference;

/// What a Pi runs.
pub const PI_PLATFORM: &str = "linux/arm64";

/// A tag, resolved.
#[derive(Debug)]
pub struct Resolved {
    /// `sha256:` of the manifest's bytes as the registry serves them.
    pub digest: String,
    /// `os/arch[/variant]` of every image it names.
    pub platforms: Vec<String>,
}

impl Resolved {
    pub fn runs_on_pi(&self) -> bool {
        self.platforms
            .iter()
            .any(|p| p == PI_PLATFORM || p == "linux/arm64/v8")
    }
}

/// Resolves a tag over the network.
pub trait Resolve {
    /// The digest and platforms of `reference`'s tag.
    fn resolve(&self, reference: &Reference) -> Result<Resolved>;
}

/// sha256 of bytes, as `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_of_the_bytes() {
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn pi_platforms() {
        let r = Resolved {
            digest: String::new(),
            platforms: vec!["linux/amd64".into(), "linux/arm64/v8".into()],
        };
        assert!(r.runs_on_pi());
        let r = Resolved {
            digest: String::new(),
            platforms: vec!["linux/amd64".into(), "linux/arm/v7".into()],
        };
        assert!(!r.runs_on_pi());
    }
}
