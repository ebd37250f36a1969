//! Central monitoring: the Prometheus configuration computed from the
//! inventory (`nix eval .#monitoring.prometheus`, offline), checked by
//! Debian's `promtool`, run by Debian's `prometheus` against Debian's
//! `prometheus-node-exporter` running inside fake Pis; the fleet
//! dashboard's queries checked against what a real scrape exports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fakepi::{self, Fleet};

/// The node exporter binary of Debian's package.
const EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

fn nix_eval(expr_or_attr: &[&str]) -> serde_json::Value {
    let out = common::command("nix")
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(["eval", "--json"])
        .args(expr_or_attr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix eval {expr_or_attr:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn promtool_check(config: &serde_json::Value, dir: &Path) {
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, serde_json::to_string_pretty(config).unwrap()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_flake_output_is_the_inventory_and_promtool_accepts_it() {
    if !common::prerequisite(common::need_nix())
        || !common::prerequisite(common::need_program("promtool", "prometheus"))
    {
        return;
    }
    let fleet = common::fixture_fleet();
    let dir = fleet.path();
    // Offline: the private store has no nixpkgs and no binary cache.
    let v = nix_eval(&[&format!("path:{}#monitoring.prometheus", dir.display())]);
    let configs = v["scrape_configs"][0]["static_configs"].as_array().unwrap();
    let inv = nix_eval(&[&format!("path:{}#inventory", dir.display())]);
    let hosts = inv["hosts"].as_object().unwrap();
    assert_eq!(configs.len(), hosts.len(), "one target per host: {v}");
    for c in configs {
        let name = c["labels"]["name"].as_str().unwrap();
        let h = &hosts[name];
        assert_eq!(
            c["targets"][0],
            format!("{}:9100", h["address"].as_str().unwrap())
        );
        assert_eq!(c["labels"]["model"], h["model"]);
        let tags: Vec<&str> = h["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(c["labels"]["tags"], format!(",{},", tags.join(",")));
    }
    promtool_check(&v, dir);

    // `check` validates the field naming the monitoring host.
    let toml = dir.join("hosts/fleet.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("\n[fleet]\n", "\n[fleet]\nmonitoring = \"rpi-box-99\"\n", 1),
    )
    .unwrap();
    let out = common::xtask(dir).arg("check").output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("`monitoring = \"rpi-box-99\"` names no host"),
        "{said}"
    );
    std::fs::write(
        &toml,
        text.replacen("\n[fleet]\n", "\n[fleet]\nmonitoring = \"rpi-box-01\"\n", 1),
    )
    .unwrap();
    let out = common::xtask(dir).arg("check").output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("the monitoring host `rpi-box-01` has address `rpi-box-01.local`"),
        "{said}"
    );
    assert!(
        said.contains("give `rpi-box-01` a static address"),
        "{said}"
    );
}

/// A process killed (and waited for) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET over plain HTTP/1.0 on loopback: the body.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

fn missing() -> Option<String> {
    common::need_root()
        .or_else(fakepi::missing)
        .or_else(|| common::need_program("prometheus", "prometheus"))
        .or_else(|| common::need_program("promtool", "prometheus"))
        .or_else(|| {
            (!Path::new(EXPORTER).exists()).then(|| {
                format!("{EXPORTER} is missing (apt-get install prometheus-node-exporter)")
            })
        })
}

/// Metric names a query uses: identifiers followed by `{`, `[`, `)` or a space
/// that are not PromQL keywords or functions.
fn metric_names(expr: &str) -> Vec<String> {
    const WORDS: [&str; 12] = [
        "sum", "max", "min", "avg", "rate", "by", "without", "count", "irate", "increase", "on",
        "ignoring",
    ];
    let mut names = Vec::new();
    let mut in_braces = false;
    // Inside `by (…)` / `without (…)`: label names, not metrics.
    let mut grouping = 0;
    let mut word = String::new();
    for ch in expr.chars().chain([' ']) {
        match ch {
            '{' => in_braces = true,
            '}' => in_braces = false,
            '(' if grouping == 1 => grouping = 2,
            ')' if grouping == 2 => {
                grouping = 0;
                word.clear();
                continue;
            }
            _ => {}
        }
        if grouping == 2 {
            continue;
        }
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
            continue;
        }
        let w = std::mem::take(&mut word);
        if w == "by" || w == "without" {
            grouping = 1;
        }
        let inside = in_braces && ch != '{';
        if !inside
            && ch != '('
            && !w.is_empty()
            && !w.chars().next().unwrap().is_ascii_digit()
            && !WORDS.contains(&w.as_str())
        {
            names.push(w);
        }
    }
    names
}

#[test]
fn prometheus_scrapes_every_fake_pi_with_its_labels() {
    if !common::prerequisite(missing()) {
        return;
    }
    let base = fakepi::base(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("fake Pi root");
    let names = ["mon-a", "mon-b", "mon-c"];
    let mut f = Fleet::new(&base, &names);
    for n in names {
        f.start(n);
    }
    for n in names {
        f.wait_ssh(n);
    }
    // The host's exporter binary, copied into each running Pi's /run and
    // started there by its own systemd (the fake Pis share this machine's
    // network: each listens on a port of its own).
    let binary = std::fs::read(EXPORTER).unwrap();
    let mut ports = Vec::new();
    for n in names {
        let port = fakepi::free_port();
        let mut ssh = Command::new("ssh")
            .args(["-F"])
            .arg(f.work().join("ssh_config"))
            .args(["-o", "BatchMode=yes", "-p", &f.pi(n).port.to_string(), "root@127.0.0.1"])
            .arg(format!(
                "cat > /run/node_exporter && chmod +x /run/node_exporter && systemd-run --quiet --unit=node-exporter /run/node_exporter --web.listen-address=127.0.0.1:{port} --collector.systemd --collector.processes --collector.textfile.directory=/run/prometheus-node-exporter/textfile"
            ))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        ssh.stdin.take().unwrap().write_all(&binary).unwrap();
        assert!(
            ssh.wait().unwrap().success(),
            "cannot start the exporter in {n}"
        );
        ports.push(port);
    }
    let tmp = tempfile::tempdir().unwrap();
    let expr = format!(
        "(import {root}/lib/monitoring.nix {{ inventory = import {root}/lib/inventory.nix {{ root = {fleet}; }}; }}).prometheus",
        root = common::repo_root().display(),
        fleet = f.repo().display()
    );
    let mut config = nix_eval(&["--impure", "--expr", &expr]);
    promtool_check(&config, tmp.path());
    // What the test changes: each target's port 9100 becomes its Pi's
    // exporter port, and a 1 s interval so the test need not wait 30 s.
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["scrape_timeout"] = "1s".into();
    for c in config["scrape_configs"][0]["static_configs"]
        .as_array_mut()
        .unwrap()
    {
        let i = names
            .iter()
            .position(|n| c["labels"]["name"] == *n)
            .unwrap();
        assert_eq!(c["targets"][0], "127.0.0.1:9100");
        c["targets"][0] = format!("127.0.0.1:{}", ports[i]).into();
    }
    promtool_check(&config, tmp.path());
    let web = fakepi::free_port();
    let data: PathBuf = tmp.path().join("data");
    let _prometheus = Guard(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                tmp.path().join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .args([
                "--storage.tsdb.retention.time=30d",
                "--storage.tsdb.retention.size=2GB",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("cannot start prometheus"),
    );
    let start = Instant::now();
    let up = loop {
        let body = get(web, "/api/v1/query?query=up").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let r = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if r.len() == names.len() && r.iter().all(|s| s["value"][1] == "1") {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every Pi up within 60 s: {body}\n{}",
            std::fs::read_to_string(tmp.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for s in &up {
        let m = &s["metric"];
        assert!(names.contains(&m["name"].as_str().unwrap()), "{m}");
        assert_eq!(m["model"], "pi4", "{m}");
        assert_eq!(m["tags"], ",fake,", "{m}");
        assert_eq!(m["job"], "node", "{m}");
    }

    // Every metric the dashboard queries is one a real scrape exports; a
    // Pi-only one only where this machine shows it has no such sensor.
    let scrape = get(ports[0], "/metrics").expect("no scrape");
    let exported: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::repo_root().join("modules/monitoring/fleet-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let no_thermal = !Path::new("/sys/class/thermal/thermal_zone0").exists();
    let no_firmware = !Path::new("/sys/devices/platform/soc/soc:firmware/get_throttled").exists();
    let mut checked = 0;
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for m in metric_names(expr) {
                if m == "up" {
                    continue;
                }
                if (m == "node_thermal_zone_temp" && no_thermal)
                    || (m == "pi_throttled_flags" && no_firmware)
                {
                    eprintln!("not checked here (this machine has no such sensor): {m}");
                    continue;
                }
                assert!(
                    exported.contains(m.as_str()),
                    "panel {}: {m} is not exported by the node exporter",
                    p["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} metrics checked");
    // Stop the Pis (and their exporters) before Prometheus goes.
    drop(f);
}

#[test]
fn metric_names_of_queries() {
    assert_eq!(
        metric_names(r#"1 - avg by (name) (rate(node_cpu_seconds_total{mode="idle"}[2m]))"#),
        ["node_cpu_seconds_total"]
    );
    assert_eq!(
        metric_names("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes"),
        [
            "node_memory_MemAvailable_bytes",
            "node_memory_MemTotal_bytes"
        ]
    );
}
