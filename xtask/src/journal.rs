//! Journal entries as `journalctl -o json` prints them, from many hosts,
//! merged into one stream (the pure core of `cargo xtask logs`).
//!
//! Order: by each entry's `__REALTIME_TIMESTAMP`, the wall clock **of the
//! Pi that logged it**, never by when the line reached the workstation.
//! A Pi whose clock is off (no RTC, no NTP yet after boot) shows up where
//! its clock says; entries with the same timestamp keep the hosts' order,
//! and one host's entries always keep their own order.

use serde_json::Value;

/// One entry: the host's index, its timestamp (µs since the epoch on the
/// Pi's clock) and the whole JSON object.
#[derive(Debug, Clone)]
pub struct Entry {
    pub host: usize,
    pub usec: u64,
    pub fields: Value,
}

/// Parses one line of `journalctl -o json`; `None` for anything else.
pub fn parse(host: usize, line: &str) -> Option<Entry> {
    let fields: Value = serde_json::from_str(line.trim()).ok()?;
    let usec = fields.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
    Some(Entry { host, usec, fields })
}

/// Every entry of every host in time order (stable: see the module docs).
pub fn merge(per_host: Vec<Vec<Entry>>) -> Vec<Entry> {
    let mut all: Vec<Entry> = per_host.into_iter().flatten().collect();
    all.sort_by_key(|e| (e.usec, e.host));
    all
}

/// A field as text: journald gives a string, or an array of bytes when
/// the value is not UTF-8 (or has control characters), or null when big.
pub fn field(e: &Entry, name: &str) -> Option<String> {
    match e.fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(bytes) => {
            let b: Vec<u8> = bytes
                .iter()
                .filter_map(|v| v.as_u64().map(|n| n as u8))
                .collect();
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        Value::Null => Some("[message too large: read it on the Pi]".into()),
        other => Some(other.to_string()),
    }
}

/// `2026-12-02 07:01:02.123456` in UTC.
pub fn time(usec: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::time::civil((usec / 1_000_000) as i64);
    format!(
        "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:06}",
        usec % 1_000_000
    )
}

/// `TIME IDENT[PID]: MESSAGE`, as `journalctl -o short-precise` shows it
/// (UTC; a container's name as its identifier).
pub fn line(e: &Entry) -> String {
    let ident = field(e, "CONTAINER_NAME")
        .or_else(|| field(e, "SYSLOG_IDENTIFIER"))
        .or_else(|| field(e, "_COMM"))
        .unwrap_or_else(|| "?".into());
    let pid = if e.fields.get("CONTAINER_NAME").is_some() {
        None
    } else {
        field(e, "_PID").or_else(|| field(e, "SYSLOG_PID"))
    };
    let msg = field(e, "MESSAGE").unwrap_or_default();
    let msg = msg.trim_end_matches('\n');
    match pid {
        Some(p) => format!("{} {ident}[{p}]: {msg}", time(e.usec)),
        None => format!("{} {ident}: {msg}", time(e.usec)),
    }
}

/// The entry as one JSON line with `"host"` (its inventory name) added.
pub fn json(e: &Entry, host: &str) -> String {
    let mut v = e.fields.clone();
    if let Value::Object(m) = &mut v {
        m.insert("host".into(), Value::String(host.into()));
    }
    v.to_string()
}

/// journalctl's match arguments for `-c NAME`: the container of that name
/// or the Compose project of that name (Docker's journald log driver sets
/// `CONTAINER_NAME`; the label `com.docker.compose.project`, which
/// modules/docker.nix asks the driver to log, becomes
/// `COM_DOCKER_COMPOSE_PROJECT`). Several names: any of them.
pub fn container_matches(names: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    for n in names {
        if !args.is_empty() {
            args.push("+".to_string());
        }
        args.push(format!("CONTAINER_NAME={n}"));
        args.push("+".to_string());
        args.push(format!("COM_DOCKER_COMPOSE_PROJECT={n}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(host: usize, usec: u64, msg: &str) -> String {
        format!(
            r#"{{"__REALTIME_TIMESTAMP":"{usec}","MESSAGE":"{msg}","SYSLOG_IDENTIFIER":"t","_PID":"7"}}"#
        )
        .replace("HOST", &host.to_string())
    }

    #[test]
    fn merged_by_the_pis_own_clocks() {
        // Host 1's clock is an hour behind: its entries come first although
        // they were fetched last, and each host keeps its own order.
        let a: Vec<Entry> = [e(0, 3_600_000_001, "a1"), e(0, 3_600_000_002, "a2")]
            .iter()
            .filter_map(|l| parse(0, l))
            .collect();
        let b: Vec<Entry> = [
            e(1, 5, "b1"),
            e(1, 3_600_000_001, "b2"),
            e(1, 9_000_000_000, "b3"),
        ]
        .iter()
        .filter_map(|l| parse(1, l))
        .collect();
        let m: Vec<String> = merge(vec![a, b])
            .iter()
            .map(|x| field(x, "MESSAGE").unwrap())
            .collect();
        assert_eq!(m, ["b1", "a1", "b2", "a2", "b3"]);
    }

    #[test]
    fn lines_and_fields() {
        assert!(parse(0, "not json").is_none());
        assert!(parse(0, r#"{"MESSAGE":"no time"}"#).is_none());
        let x = parse(0, r#"{"__REALTIME_TIMESTAMP":"1764658862123456","MESSAGE":[104,105,10],"_COMM":"sh","_PID":"42"}"#).unwrap();
        assert_eq!(line(&x), "2025-12-02 07:01:02.123456 sh[42]: hi");
        let c = parse(
            0,
            r#"{"__REALTIME_TIMESTAMP":"0","MESSAGE":"up","CONTAINER_NAME":"web","_PID":"9"}"#,
        )
        .unwrap();
        assert_eq!(line(&c), "1970-01-01 00:00:00.000000 web: up");
        assert!(json(&c, "pi-1").contains(r#""host":"pi-1""#));
        let big = parse(0, r#"{"__REALTIME_TIMESTAMP":"0","MESSAGE":null}"#).unwrap();
        assert!(line(&big).contains("too large"));
    }

    #[test]
    fn container_or_project() {
        assert_eq!(
            container_matches(&["web".into()]),
            ["CONTAINER_NAME=web", "+", "COM_DOCKER_COMPOSE_PROJECT=web"]
        );
        assert_eq!(container_matches(&["a".into(), "b".into()]).len(), 7);
    }
}
