//! `cargo xtask check` on Compose projects: every problem with file:line and
//! the fix, and warnings for what works but weakens the Pi.

use std::path::Path;

use anyhow::Result;

use super::interpolate::{Env, interpolate};
use super::ports::{Published, parse_long, parse_short};
use super::yaml::{self, Node, Value};
use super::{FILE, Project};
use crate::container_pins::pinned;
use crate::inventory::{Fleet, Problem, line_of};

/// The Compose Specification's top-level elements.
const TOP_LEVEL: [&str; 9] = [
    "version", "name", "services", "networks", "volumes", "configs", "secrets", "include", "models",
];

#[derive(Default, Debug)]
pub struct Findings {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// A published port and where it is declared.
struct Binding {
    published: Published,
    file: String,
    line: usize,
    owner: String,
}

/// Every host's projects, and published ports across them and containers.toml.
pub fn fleet(fleet: &Fleet) -> Result<Findings> {
    let mut f = Findings::default();
    for host in &fleet.hosts {
        let mut bindings = containers_toml_ports(&fleet.root, &host.name);
        for project in super::projects(&fleet.root, &host.name)? {
            bindings.extend(one(fleet, &project, &mut f)?);
        }
        duplicates(&bindings, &mut f.problems);
    }
    // In file order, as an editor shows them.
    f.problems
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    f.warnings
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(f)
}

fn duplicates(bindings: &[Binding], problems: &mut Vec<Problem>) {
    for (i, b) in bindings.iter().enumerate() {
        if let Some(first) = bindings[..i]
            .iter()
            .find(|a| a.published.clashes(&b.published))
        {
            problems.push(Problem::new(
                &b.file,
                b.line,
                format!(
                    "{}: host port {} is already published by {} ({}:{}): the second one cannot start",
                    b.owner,
                    b.published.show(),
                    first.owner,
                    first.file,
                    first.line
                ),
                "publish one of them on another host port",
            ));
        }
    }
}

fn containers_toml_ports(root: &Path, host: &str) -> Vec<Binding> {
    let rel = crate::containers::file(host);
    let Ok(text) = std::fs::read_to_string(root.join(&rel)) else {
        return Vec::new();
    };
    let Ok(doc) = toml::de::DeTable::parse(&text) else {
        return Vec::new(); // container_pins reports it
    };
    let doc = doc.into_inner();
    let mut out = Vec::new();
    for table in crate::containers::tables(&doc) {
        let field = |k: &str| crate::containers::field(table, k);
        let name = field("name")
            .and_then(|v| v.get_ref().as_str())
            .unwrap_or("?");
        let Some(ports) = field("ports").and_then(|v| v.get_ref().as_array()) else {
            continue;
        };
        for p in ports.iter() {
            let Some(spec) = p.get_ref().as_str() else {
                continue;
            };
            for published in parse_short(spec).unwrap_or_default() {
                out.push(Binding {
                    published,
                    file: rel.clone(),
                    line: line_of(&text, p.span().start),
                    owner: format!("container `{name}`"),
                });
            }
        }
    }
    out
}

/// One project's problems and warnings; its published ports.
fn one(fleet: &Fleet, project: &Project, f: &mut Findings) -> Result<Vec<Binding>> {
    let root = fleet.root.as_path();
    let rel = project.file();
    if !super::valid_project_name(&project.name) {
        f.problems.push(Problem::new(
            &project.dir,
            0,
            format!("`{}` is not a valid Compose project name", project.name),
            "rename the folder: lowercase letters, digits, `-` and `_`, starting with a letter or digit",
        ));
    }
    let text = match std::fs::read_to_string(root.join(&rel)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let other = ["compose.yml", "docker-compose.yml", "docker-compose.yaml"]
                .into_iter()
                .find(|n| root.join(&project.dir).join(n).is_file());
            f.problems.push(Problem::new(
                &project.dir,
                0,
                format!("the project folder has no {FILE}"),
                match other {
                    Some(n) => format!("rename {n} to {FILE} (the one name the Pi's service runs)"),
                    None => format!("add {FILE}, or remove the folder"),
                },
            ));
            return Ok(Vec::new());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {rel}"))),
    };
    let (env, bad_env) = super::env(root, &project.dir)?;
    for line in bad_env {
        f.problems.push(Problem::new(
            &format!("{}/.env", project.dir),
            line,
            "not a `NAME=value` line",
            "write `NAME=value`, or start the line with `#`",
        ));
    }
    let bindings = file(&rel, &text, &env, &project.name, f);
    if let Ok(doc) = yaml::parse(&text) {
        for (line, path) in file_refs(&doc, &env) {
            if let Some(name) = path.strip_prefix(AGENIX) {
                f.problems.extend(secret_problem(
                    fleet,
                    &rel,
                    line,
                    &path,
                    name,
                    &project.host,
                ));
            } else if !path.starts_with('/') && !root.join(&project.dir).join(&path).exists() {
                f.problems.push(Problem::new(
                    &rel,
                    line,
                    format!("`{path}` is not in the project folder: Compose would refuse to start"),
                    format!(
                        "add it to {}, or point at /run/agenix/<name> for a secret",
                        project.dir
                    ),
                ));
            }
        }
    }
    Ok(bindings)
}

/// A project's `/run/agenix/<name>`: a secret the fleet declares in
/// secrets/secrets.toml for the project's host, or the Pi cannot read it.
/// A secrets file that does not parse is `check`'s secrets problem, not this.
fn secret_problem(
    fleet: &Fleet,
    rel: &str,
    line: usize,
    path: &str,
    name: &str,
    host: &str,
) -> Option<Problem> {
    if !fleet.root.join(SECRETS).is_file() {
        return Some(Problem::new(
            rel,
            line,
            format!(
                "`{path}` is the secret `{name}`, but the fleet declares no secrets ({SECRETS} is missing): the Pi cannot read it"
            ),
            format!("`cargo xtask secret set {name} --host {host}` (see documentation/secrets.md)"),
        ));
    }
    let entries = crate::secrets::read(&fleet.root).ok()?;
    let Some(entry) = entries.get(name) else {
        return Some(Problem::new(
            rel,
            line,
            format!(
                "`{path}` is the secret `{name}`, which {SECRETS} does not declare: the Pi cannot read it"
            ),
            format!("`cargo xtask secret set {name} --host {host}`"),
        ));
    };
    let readers = crate::secrets::readers(fleet, entry).ok()?;
    (!readers.iter().any(|r| r == host)).then(|| {
        Problem::new(
            rel,
            line,
            format!(
                "`{path}` is the secret `{name}`, but host {host} does not read it (it is for: {})",
                readers.join(", ")
            ),
            format!("add {host} to `[{name}]` in {SECRETS}, then `cargo xtask secret rekey`"),
        )
    })
}

/// Where agenix puts a host's decrypted secrets.
const AGENIX: &str = "/run/agenix/";
/// The fleet's secrets and who reads them (the secrets issue).
const SECRETS: &str = "secrets/secrets.toml";

/// Files a project reads from the host: every service's `env_file:` and the
/// top-level `secrets:`/`configs:` `file:`, interpolated, with their lines.
pub fn file_refs(doc: &Node, env: &Env) -> Vec<(usize, String)> {
    let value = |n: &Node| {
        n.as_str().map(|s| {
            interpolate(s, env)
                .map(|o| o.value)
                .unwrap_or_else(|_| s.to_string())
        })
    };
    let mut out = Vec::new();
    for (_, svc) in doc.get("services").map(|s| s.entries()).unwrap_or_default() {
        let Some(ef) = svc.get("env_file") else {
            continue;
        };
        let items: Vec<&Node> = match &ef.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![ef],
        };
        for item in items {
            // `- path: x` (long form; `required: false` may be missing)
            let (node, required) = match &item.value {
                Value::Map(_) => (
                    item.get("path"),
                    item.get("required")
                        .and_then(value)
                        .is_none_or(|r| r != "false"),
                ),
                _ => (Some(item), true),
            };
            if let (Some(n), true) = (node, required)
                && let Some(p) = value(n)
            {
                out.push((n.line, p));
            }
        }
    }
    for top in ["secrets", "configs"] {
        for (_, s) in doc.get(top).map(|s| s.entries()).unwrap_or_default() {
            if let Some(n) = s.get("file")
                && let Some(p) = value(n)
            {
                out.push((n.line, p));
            }
        }
    }
    out
}

/// The checks on one compose file's text (pure: unit-tested below).
fn file(rel: &str, text: &str, env: &Env, project: &str, f: &mut Findings) -> Vec<Binding> {
    let doc = match yaml::parse(text) {
        Ok(d) => d,
        Err(e) => {
            f.problems.push(Problem::new(
                rel,
                e.line,
                format!("not valid YAML: {}", e.message),
                "correct the syntax",
            ));
            return Vec::new();
        }
    };
    if !matches!(doc.value, Value::Map(_)) {
        f.problems.push(Problem::new(
            rel,
            doc.line,
            "not a Compose file: the top level is not a mapping",
            "start from the app's own compose.yaml",
        ));
        return Vec::new();
    }
    // Compose interpolates every value before reading the file.
    let mut values = Vec::new();
    walk(&doc, &mut values);
    for node in values {
        let s = node.as_str().unwrap_or("");
        match interpolate(s, env) {
            Err(e) => f.problems.push(Problem::new(
                rel,
                node.line,
                format!("interpolation fails: {e}"),
                "set the variable in the project's .env (next to compose.yaml)",
            )),
            Ok(o) => {
                for var in o.unset {
                    f.problems.push(Problem::new(rel, node.line, format!("`{var}` is not set: Compose would substitute an empty string"), format!("set {var}=… in the project's .env, give a default (`${{{var}:-value}}`), or write `$$` for a literal `$`")));
                }
            }
        }
    }
    let value = |n: &Node| {
        n.as_str().map(|s| {
            interpolate(s, env)
                .map(|o| o.value)
                .unwrap_or_else(|_| s.to_string())
        })
    };
    for (key, _) in doc.entries() {
        let k = key.as_str().unwrap_or("");
        if !TOP_LEVEL.contains(&k) && !k.starts_with("x-") {
            f.problems.push(Problem::new(
                rel,
                key.line,
                format!("unknown top-level key `{k}`"),
                format!(
                    "the Compose Specification knows {}, and `x-…` extensions; check the spelling",
                    TOP_LEVEL.join(", ")
                ),
            ));
        }
    }
    let Some(services) = doc.get("services") else {
        if doc.get("include").is_none() {
            f.problems.push(Problem::new(
                rel,
                0,
                "no `services`: the project runs nothing",
                "add the services (copy them from the app's compose.yaml)",
            ));
        }
        return Vec::new();
    };
    let mut bindings = Vec::new();
    for (name, svc) in services.entries() {
        let name = name.as_str().unwrap_or("?");
        let owner = format!("service `{name}` of project `{project}`");
        if let Some(b) = svc.get("build") {
            f.problems.push(Problem::new(rel, b.line, format!("service `{name}` has `build:`: a Pi does not build images"), "build and push the image to a registry (see documentation/apps.md), then replace `build:` by `image:` and run `cargo xtask pin`"));
        }
        match svc.get("image") {
            None if svc.get("build").is_none() => f.problems.push(Problem::new(
                rel,
                svc.line,
                format!("service `{name}` has no `image:`"),
                "give it the image it runs, then `cargo xtask pin`",
            )),
            None => {}
            Some(image) => {
                let v = value(image).unwrap_or_default();
                if !pinned(&v) {
                    f.problems.push(Problem::new(
                        rel,
                        image.line,
                        format!("service `{name}`: image `{v}` is not pinned by digest"),
                        format!("`cargo xtask pin {rel}` writes <image>:<tag>@sha256:<digest>"),
                    ));
                }
            }
        }
        if svc
            .get("privileged")
            .and_then(value)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            f.warnings.push(Problem::new(rel, svc.get("privileged").map_or(svc.line, |n| n.line), format!("service `{name}` is privileged: it has every device and capability, so a flaw in it owns the Pi"), "grant only what it needs (`devices:`, `cap_add:`), if its README allows"));
        }
        if let Some(n) = svc.get("network_mode")
            && value(n).as_deref() == Some("host")
        {
            f.warnings.push(Problem::new(rel, n.line, format!("service `{name}` uses the host's network: its ports bypass `ports:` (and this check of duplicates) and it sees every interface"), "publish its ports with `ports:` unless it needs the host network (mDNS, DHCP)"));
        }
        for p in svc.get("ports").map(Node::items).unwrap_or(&[]) {
            let parsed = if let Value::Map(_) = p.value {
                let field = |k| p.get(k).and_then(value);
                parse_long(
                    field("published").as_deref(),
                    field("host_ip").as_deref(),
                    field("protocol").as_deref(),
                )
            } else {
                parse_short(&value(p).unwrap_or_default())
            };
            match parsed {
                Ok(list) => bindings.extend(list.into_iter().map(|published| Binding {
                    published,
                    file: rel.to_string(),
                    line: p.line,
                    owner: owner.clone(),
                })),
                Err(e) => f.problems.push(Problem::new(
                    rel,
                    p.line,
                    format!("service `{name}`: {e}"),
                    "write `[ip:]host:container[/protocol]`",
                )),
            }
        }
    }
    bindings
}

/// Every scalar value (not keys) of a document.
fn walk<'a>(n: &'a Node, out: &mut Vec<&'a Node>) {
    match &n.value {
        Value::Scalar(..) => out.push(n),
        Value::Seq(items) => items.iter().for_each(|i| walk(i, out)),
        Value::Map(entries) => entries.iter().for_each(|(_, v)| walk(v, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:200689790a0a0ea48ca45992e0450bc26ccab5307375b41c84dfc4f2475937ab";

    fn run(text: &str, env: &[(&str, &str)]) -> (Findings, Vec<Binding>) {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut f = Findings::default();
        let b = file("c.yaml", text, &env, "p", &mut f);
        (f, b)
    }

    #[test]
    fn clean_project() {
        let (f, b) = run(
            &format!(
                "services:\n  web:\n    image: nginx:${{TAG}}@{D}\n    ports: [\"8080:80\"]\nx-a: 1\n"
            ),
            &[("TAG", "1")],
        );
        assert!(f.problems.is_empty() && f.warnings.is_empty(), "{f:#?}");
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn every_refusal_has_its_line() {
        let text = "services:\n  web:\n    image: nginx:${TAG}\n    privileged: true\n  app:\n    build: .\n    network_mode: host\n    environment:\n      A: ${NOPE}\nservice:\n  x: 1\n";
        let (f, _) = run(text, &[("TAG", "1.27")]);
        let lines: Vec<(usize, &str)> = f
            .problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 3 && m.contains("`nginx:1.27` is not pinned")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|(l, m)| *l == 6 && m.contains("build:")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 9 && m.contains("`NOPE` is not set")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 10 && m.contains("unknown top-level key `service`")),
            "{lines:#?}"
        );
        assert_eq!(f.problems.len(), 4, "{lines:#?}");
        let w: Vec<usize> = f.warnings.iter().map(|p| p.line).collect();
        assert_eq!(w, vec![4, 7]);
    }

    #[test]
    fn files_a_project_reads() {
        let doc = yaml::parse("services:\n  a:\n    env_file: /run/agenix/app-env\n  b:\n    env_file:\n      - .env.b\n      - path: ./opt\n        required: false\nsecrets:\n  pw:\n    file: ${DIR}/pw\nconfigs:\n  c:\n    file: ./c.conf\n").unwrap();
        let env = [("DIR".to_string(), "/run/agenix".to_string())].into();
        assert_eq!(
            file_refs(&doc, &env),
            vec![
                (3, "/run/agenix/app-env".into()),
                (6, ".env.b".into()),
                (11, "/run/agenix/pw".into()),
                (14, "./c.conf".into())
            ]
        );
    }

    #[test]
    fn duplicate_ports() {
        let (_, mut b) = run(
            &format!(
                "services:\n  a:\n    image: a@{D}\n    ports: [\"8080:80\"]\n  b:\n    image: b@{D}\n    ports:\n      - target: 80\n        published: \"8080\"\n"
            ),
            &[],
        );
        let mut problems = Vec::new();
        duplicates(&b, &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 8);
        assert!(
            problems[0].message.contains("c.yaml:4"),
            "{}",
            problems[0].message
        );
        b.truncate(1);
        problems.clear();
        duplicates(&b, &mut problems);
        assert!(problems.is_empty());
    }

    #[test]
    fn yaml_error_and_required_variable() {
        let (f, _) = run("services:\n  a: [\n", &[]);
        assert!(f.problems[0].message.contains("not valid YAML"));
        let (f, _) = run(
            &format!(
                "services:\n  a:\n    image: a@{D}\n    environment:\n      - P=${{PW:?put PW in .env}}\n"
            ),
            &[],
        );
        assert_eq!(f.problems[0].line, 5);
        assert!(f.problems[0].message.contains("put PW in .env"));
    }
}
