//! Image references as Docker reads them: `[registry/]repository[:tag][@digest]`,
//! with Docker Hub's defaults (`nginx` is `docker.io/library/nginx:latest`).

use anyhow::{Result, bail};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The registry as written, or `docker.io` when none is.
    pub registry: String,
    /// `library/nginx`, `traefik/whoami`, `org/team/app`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
    /// The reference without its digest, exactly as written (`nginx:1.27`).
    pub name_as_written: String,
}

impl Reference {
    pub fn parse(image: &str) -> Result<Reference> {
        let image = image.trim();
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            bail!("`{image}` is not an image reference");
        }
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => {
                let hex = d.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("`{image}`: the digest must be sha256:<64 hex digits>");
                }
                (n, Some(d.to_ascii_lowercase()))
            }
            None => (image, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name, None),
        };
        if tag.as_deref() == Some("") || path.is_empty() {
            bail!("`{image}` is not an image reference");
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), path.to_string()),
        };
        let repository = if is_docker_hub(&registry) && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository
            .bytes()
            .any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)))
        {
            bail!("`{image}`: a repository name is lowercase letters, digits and . _ - /");
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
            name_as_written: name.to_string(),
        })
    }

    /// The tag to resolve: the written one, or `latest` as Docker does.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// What `pin` writes: the reference as written, with the digest.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name_as_written)
    }

    /// Where the distribution API is: `https://registry-1.docker.io` for
    /// Docker Hub; plain HTTP for a registry on this machine, as Docker does.
    pub fn api_base(&self) -> String {
        let host = if is_docker_hub(&self.registry) {
            "registry-1.docker.io"
        } else {
            self.registry.as_str()
        };
        let scheme = if is_loopback(host) { "http" } else { "https" };
        format!("{scheme}://{host}")
    }
}

pub fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `localhost`, 127.0.0.0/8 or `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:200689790a0a0ea48ca45992e0450bc26ccab5307375b41c84dfc4f2475937ab";

    #[test]
    fn docker_hub_defaults() {
        let r = Reference::parse("nginx").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.tag_or_latest(), "latest");
        assert_eq!(r.api_base(), "https://registry-1.docker.io");
        let r = Reference::parse("traefik/whoami:v1.11.0").unwrap();
        assert_eq!(r.repository, "traefik/whoami");
        assert_eq!(r.tag.as_deref(), Some("v1.11.0"));
        assert_eq!(r.pinned(D), format!("traefik/whoami:v1.11.0@{D}"));
    }

    #[test]
    fn registries_ports_and_digests() {
        let r = Reference::parse(&format!("localhost:5000/team/app:1.0@{D}")).unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.api_base(), "http://localhost:5000");
        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.api_base(), "http://127.0.0.1:5000");
        assert_eq!(r.tag, None);
        let r = Reference::parse("ghcr.io/owner/app:v2").unwrap();
        assert_eq!(r.api_base(), "https://ghcr.io");
        assert_eq!(r.repository, "owner/app");
        let r = Reference::parse("docker.io/library/redis:7").unwrap();
        assert_eq!(r.repository, "library/redis");
    }

    #[test]
    fn bad_references() {
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("nginx@sha256:abc").is_err());
        assert!(Reference::parse("Nginx:1").is_err());
        assert!(Reference::parse("nginx:").is_err());
        assert!(Reference::parse("a b").is_err());
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("127.1.2.3:80"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        assert!(!is_loopback("192.0.2.1:5000"));
    }
}
