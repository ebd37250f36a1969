//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free loopback port, its storage in a temp
//! dir, stopped on drop; images written as OCI layouts by the test and
//! pushed with `skopeo`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// `None` when the registry and skopeo are installed, else the reason.
pub fn need_tools() -> Option<String> {
    super::need_program("docker-registry", "docker-registry")
        .or_else(|| super::need_program("skopeo", "skopeo"))
}

pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub host: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: test-only\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        eprintln!("$ docker-registry serve {}", config.display());
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry { child, host, dir };
        let start = Instant::now();
        while TcpStream::connect(&registry.host).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry did not listen on {} within 20 s",
                registry.host
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn policy(&self) -> PathBuf {
        let p = self.dir.path().join("policy.json");
        std::fs::write(&p, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        p
    }

    /// Pushes an OCI layout's image (and, for an index, all its images) as
    /// `<repo>:<tag>`.
    pub fn push(&self, layout: &Path, repo: &str, tag: &str) {
        let out = Command::new("skopeo")
            .arg("--policy")
            .arg(self.policy())
            .args(["copy", "--all", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host))
            .output()
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `sha256:` of the manifest bytes the registry serves for `repo:tag`
    /// (`skopeo inspect --raw`, hashed).
    pub fn raw_digest(&self, repo: &str, tag: &str) -> String {
        let out = Command::new("skopeo")
            .arg("--policy")
            .arg(self.policy())
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{repo}:{tag}", self.host))
            .output()
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "skopeo inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sha256(&out.stdout)
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// An OCI image layout being written.
pub struct Layout {
    pub dir: PathBuf,
}

/// A descriptor: media type, digest, size.
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub size: usize,
}

impl Blob {
    fn json(&self, platform: Option<(&str, &str)>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "mediaType": self.media_type, "digest": self.digest, "size": self.size
        });
        if let Some((os, arch)) = platform {
            v["platform"] = serde_json::json!({ "os": os, "architecture": arch });
        }
        v
    }
}

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn blob(&self, media_type: &'static str, bytes: &[u8]) -> Blob {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).unwrap();
        Blob {
            media_type,
            digest,
            size: bytes.len(),
        }
    }

    /// An image for `arch` whose one layer is the tar `layer`; `note` makes
    /// its config (so its digest) differ from another push.
    pub fn image(&self, arch: &str, layer: &[u8], config_extra: serde_json::Value) -> Blob {
        let layer_blob = self.blob("application/vnd.oci.image.layer.v1.tar", layer);
        let mut config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [layer_blob.digest] },
            "config": {}
        });
        if let serde_json::Value::Object(extra) = config_extra {
            for (k, v) in extra {
                config[k] = v;
            }
        }
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": config.json(None), "layers": [layer_blob.json(None)]
        });
        self.blob(MANIFEST, &serde_json::to_vec(&manifest).unwrap())
    }

    pub fn index(&self, images: &[(&Blob, &str)]) -> Blob {
        let manifests: Vec<_> = images
            .iter()
            .map(|(b, arch)| b.json(Some(("linux", arch))))
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": INDEX, "manifests": manifests
        });
        self.blob(INDEX, &serde_json::to_vec(&index).unwrap())
    }

    /// Names `top` as `tag` in the layout's index.json.
    pub fn tag(&self, top: &Blob, tag: &str) {
        let mut d = top.json(None);
        d["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": [d] });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A tar archive holding one file (ustar, written by hand: 512-byte header,
/// content padded to 512, two zero blocks).
pub fn tar_with(name: &str, content: &[u8], mode: u32) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |v: u64, width: usize| format!("{v:0w$o}\0", w = width - 1).into_bytes();
    h[100..108].copy_from_slice(&octal(mode as u64, 8));
    h[108..116].copy_from_slice(&octal(0, 8));
    h[116..124].copy_from_slice(&octal(0, 8));
    h[124..136].copy_from_slice(&octal(content.len() as u64, 12));
    h[136..148].copy_from_slice(&octal(0, 12));
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}
