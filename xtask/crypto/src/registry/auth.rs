//! Registry credentials as Docker keeps them (`~/.docker/config.json`:
//! `auths`, `credHelpers`, `credsStore`) and the `WWW-Authenticate`
//! challenge of the distribution API (Bearer token flow or Basic).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::Deserialize;

use xtask::registry::reference::is_docker_hub;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

pub fn read_config() -> Result<DockerConfig> {
    let Some(path) = config_path() else {
        return Ok(DockerConfig::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not valid JSON: correct it or move it away",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The keys Docker files a registry's login under.
fn keys(registry: &str) -> Vec<String> {
    if is_docker_hub(registry) {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    }
}

impl DockerConfig {
    /// The login for a registry: a credential helper if one is configured
    /// for it (or for all), else the `auths` entry.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let keys = keys(registry);
        let helper = keys
            .iter()
            .find_map(|k| self.cred_helpers.get(k))
            .or(self.creds_store.as_ref());
        if let Some(helper) = helper {
            return helper_get(helper, &keys[0]);
        }
        let Some(auth) = keys
            .iter()
            .find_map(|k| self.auths.get(k))
            .and_then(|e| e.auth.as_deref())
        else {
            return Ok(None);
        };
        decode_auth(auth)
            .map(Some)
            .with_context(|| format!("the docker login for {registry} in ~/.docker/config.json cannot be read: run `docker login {registry}` again"))
    }
}

pub fn decode_auth(auth: &str) -> Result<Credentials> {
    let raw = base64::engine::general_purpose::STANDARD.decode(auth.trim())?;
    let raw = String::from_utf8(raw)?;
    let Some((username, secret)) = raw.split_once(':') else {
        bail!("not user:password");
    };
    Ok(Credentials {
        username: username.into(),
        secret: secret.into(),
    })
}

/// `docker-credential-<helper> get`, the server on stdin, JSON out.
fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    eprintln!("$ {program} get  # for {server}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("~/.docker/config.json names the credential helper `{helper}` but `{program}` cannot run: install it or remove it from the file"))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(server.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        // "credentials not found": an anonymous pull is still worth trying.
        eprintln!("$ {program} get  # failed ({}): no login used", out.status);
        return Ok(None);
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        username: String,
        secret: String,
    }
    let r: Reply = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`{program} get` did not print the expected JSON"))?;
    Ok(Some(Credentials {
        username: r.username,
        secret: r.secret,
    }))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut fields = BTreeMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, a)| (v, a))
        };
        fields.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(Challenge::Bearer {
        realm: fields.remove("realm")?,
        service: fields.remove("service"),
        scope: fields.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn auths_entry_for_docker_hub() {
        let cfg: DockerConfig = serde_json::from_str(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}}}"#,
        )
        .unwrap();
        let c = cfg.credentials("docker.io").unwrap().unwrap();
        assert_eq!(c.username, "user");
        assert_eq!(c.secret, "pass");
        assert_eq!(c.basic_header(), "Basic dXNlcjpwYXNz");
        assert_eq!(cfg.credentials("ghcr.io").unwrap(), None);
    }
}
