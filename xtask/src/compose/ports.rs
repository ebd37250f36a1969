//! Published host ports, from Compose's short (`[ip:]host:container[/proto]`,
//! ranges) and long (`published`, `host_ip`, `protocol`) forms, and from
//! `docker run -p` specs in containers.toml.

/// One host port a container takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Empty for all addresses.
    pub ip: String,
    pub port: u16,
    pub protocol: String,
}

impl Published {
    /// Two bindings clash when port and protocol match and the addresses
    /// overlap (one of them is all addresses, or both are the same).
    pub fn clashes(&self, other: &Published) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip.is_empty() || other.ip.is_empty() || self.ip == other.ip)
    }

    pub fn show(&self) -> String {
        if self.ip.is_empty() {
            format!("{}/{}", self.port, self.protocol)
        } else {
            format!("{}:{}/{}", self.ip, self.port, self.protocol)
        }
    }
}

fn range(s: &str) -> Result<Vec<u16>, String> {
    let bad = || format!("`{s}` is not a port or a port range");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a..=b).collect())
}

/// The host ports of a short-form spec (none when only the container port
/// is given: Docker then picks a free one).
pub fn parse_short(spec: &str) -> Result<Vec<Published>, String> {
    let (rest, protocol) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once("]:")
            .ok_or_else(|| format!("`{spec}`: an IPv6 address needs `[addr]:host:container`"))?;
        (ip.to_string(), after)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), rest),
            3 => (parts[0].to_string(), &rest[parts[0].len() + 1..]),
            _ => return Err(format!("`{spec}` is not `[ip:]host:container[/protocol]`")),
        }
    };
    let Some((host, container)) = rest.split_once(':') else {
        range(rest)?;
        return Ok(Vec::new());
    };
    range(container)?;
    if host.is_empty() {
        return Ok(Vec::new());
    }
    let ip = if ip == "0.0.0.0" || ip == "::" {
        String::new()
    } else {
        ip
    };
    Ok(range(host)?
        .into_iter()
        .map(|port| Published {
            ip: ip.clone(),
            port,
            protocol: protocol.to_string(),
        })
        .collect())
}

/// The long form's fields.
pub fn parse_long(
    published: Option<&str>,
    host_ip: Option<&str>,
    protocol: Option<&str>,
) -> Result<Vec<Published>, String> {
    let Some(published) = published.filter(|p| !p.is_empty()) else {
        return Ok(Vec::new());
    };
    let ip = host_ip
        .filter(|i| *i != "0.0.0.0" && *i != "::")
        .unwrap_or("");
    Ok(range(published)?
        .into_iter()
        .map(|port| Published {
            ip: ip.to_string(),
            port,
            protocol: protocol.unwrap_or("tcp").to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(s: &str) -> Vec<String> {
        parse_short(s)
            .unwrap()
            .iter()
            .map(Published::show)
            .collect()
    }

    #[test]
    fn short_forms() {
        assert_eq!(ports("8080:80"), ["8080/tcp"]);
        assert_eq!(ports("127.0.0.1:53:53/udp"), ["127.0.0.1:53/udp"]);
        assert_eq!(ports("0.0.0.0:80:80"), ["80/tcp"]);
        assert_eq!(ports("[::1]:80:80"), ["::1:80/tcp"]);
        assert_eq!(ports("9000-9001:9000-9001"), ["9000/tcp", "9001/tcp"]);
        assert!(ports("80").is_empty());
        assert!(parse_short("a:b").is_err());
    }

    #[test]
    fn clashes() {
        let a = &parse_short("8080:80").unwrap()[0];
        let b = &parse_short("127.0.0.1:8080:81").unwrap()[0];
        let c = &parse_short("8080:80/udp").unwrap()[0];
        assert!(a.clashes(b));
        assert!(!a.clashes(c));
        let d = &parse_long(Some("8080"), Some("127.0.0.2"), None).unwrap()[0];
        assert!(!b.clashes(d));
    }
}
