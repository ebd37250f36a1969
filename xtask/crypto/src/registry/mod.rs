//! The OCI distribution API over HTTPS, just enough to pin: resolve a tag to
//! the digest of its manifest (the index, for multi-platform images) and say
//! which platforms it has. Docker Hub's token flow, `~/.docker/config.json`
//! logins, plain HTTP for registries on this machine.

pub mod auth;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use xtask::registry::reference::Reference;
use xtask::registry::{Resolve, Resolved, digest_of};

use auth::{Challenge, Credentials, DockerConfig};

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub struct Client {
    agent: ureq::Agent,
    config: DockerConfig,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

impl Client {
    pub fn new() -> Result<Client> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .user_agent("pi-nixos-xtask")
            .build()
            .into();
        Ok(Client {
            agent,
            config: auth::read_config()?,
        })
    }

    /// GET with the registry's authentication dance; the body and its
    /// content type.
    fn get(&self, r: &Reference, url: &str, accept: &str) -> Result<(Vec<u8>, String)> {
        eprintln!("$ GET {url}");
        let mut resp = self.send(url, accept, None)?;
        if resp.status() == 401 {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            let creds = self.config.credentials(&r.registry)?;
            let authorization = match challenge {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let scope =
                        scope.unwrap_or_else(|| format!("repository:{}:pull", r.repository));
                    let token =
                        self.token(&realm, service.as_deref(), &scope, creds.as_ref(), r)?;
                    format!("Bearer {token}")
                }
                Some(Challenge::Basic) => match &creds {
                    Some(c) => c.basic_header(),
                    None => bail!(
                        "{} needs a login: run `docker login {}`, then pin again",
                        r.registry,
                        r.registry
                    ),
                },
                None => bail!(
                    "{} answered 401 without a challenge this client knows",
                    r.registry
                ),
            };
            resp = self.send(url, accept, Some(&authorization))?;
        }
        let status = resp.status().as_u16();
        match status {
            200 => {}
            401 | 403 => bail!(
                "{} refused access to {} (HTTP {status}): the repository is private or does not exist; if it is yours, `docker login {}` and pin again",
                r.registry,
                r.repository,
                r.registry
            ),
            404 => bail!(
                "{} has no {}:{} (HTTP 404): check the name and tag on the image's registry page",
                r.registry,
                r.repository,
                r.tag_or_latest()
            ),
            429 => bail!(
                "{} rate limit reached (HTTP 429): wait, or `docker login {}` (logged-in pulls have a higher limit), then pin again",
                r.registry,
                r.registry
            ),
            s => bail!(
                "{} answered HTTP {s} for {url}: try again later",
                r.registry
            ),
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .with_context(|| format!("reading {url}"))?;
        Ok((body, content_type))
    }

    fn send(
        &self,
        url: &str,
        accept: &str,
        authorization: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(url).header("Accept", accept);
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        req.call().with_context(|| {
            format!("cannot reach {url}: check the registry's name and your network")
        })
    }

    fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
        r: &Reference,
    ) -> Result<String> {
        let mut req = self.agent.get(realm).query("scope", scope);
        if let Some(s) = service {
            req = req.query("service", s);
        }
        if let Some(c) = creds {
            req = req.header("Authorization", &c.basic_header());
        }
        eprintln!("$ GET {realm}  # token for {scope}");
        let mut resp = req
            .call()
            .with_context(|| format!("cannot reach {realm} for a token"))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => bail!(
                "{realm} refused a token for {scope}: {}",
                if creds.is_some() {
                    format!(
                        "the login in ~/.docker/config.json was refused; run `docker login {}` again",
                        r.registry
                    )
                } else {
                    format!(
                        "the repository is private or does not exist; if it is yours, `docker login {}`",
                        r.registry
                    )
                }
            ),
            429 => bail!(
                "{realm}: rate limit reached (HTTP 429): wait, or `docker login {}`",
                r.registry
            ),
            s => bail!("{realm} answered HTTP {s}: try again later"),
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&resp.body_mut().read_to_vec()?)
            .with_context(|| format!("{realm} did not answer with a token"))?;
        t.token
            .or(t.access_token)
            .with_context(|| format!("{realm} answered without a token"))
    }
}

impl Resolve for Client {
    fn resolve(&self, r: &Reference) -> Result<Resolved> {
        let what = format!(
            "{}:{}",
            r.name_as_written.split('@').next().unwrap_or(""),
            r.tag_or_latest()
        );
        let url = format!(
            "{}/v2/{}/manifests/{}",
            r.api_base(),
            r.repository,
            r.tag_or_latest()
        );
        let accept = [INDEX_TYPES, MANIFEST_TYPES].concat().join(", ");
        let (body, content_type) = self
            .get(r, &url, &accept)
            .with_context(|| format!("cannot resolve {what}"))?;
        let digest = digest_of(&body);
        let platforms = if INDEX_TYPES.contains(&content_type.as_str()) || looks_like_index(&body) {
            let index: Index = serde_json::from_slice(&body)
                .with_context(|| format!("{what}: the registry's index is not valid JSON"))?;
            index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .map(Platform::name)
                .filter(|p| p != "unknown/unknown") // attestations
                .collect()
        } else {
            // One image: its platform is in its config blob.
            let m: Manifest = serde_json::from_slice(&body)
                .with_context(|| format!("{what}: the registry's manifest is not valid JSON"))?;
            let url = format!(
                "{}/v2/{}/blobs/{}",
                r.api_base(),
                r.repository,
                m.config.digest
            );
            let (config, _) = self
                .get(r, &url, "*/*")
                .with_context(|| format!("cannot read the configuration of {what}"))?;
            let p: Platform = serde_json::from_slice(&config)
                .with_context(|| format!("{what}: its image configuration is not valid JSON"))?;
            vec![p.name()]
        };
        Ok(Resolved { digest, platforms })
    }
}

fn looks_like_index(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some_and(|m| m.is_array()))
}
