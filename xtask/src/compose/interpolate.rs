//! Compose's variable interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`,
//! `${VAR+alt}`, `$$`), and the project's `.env` file it reads.

use std::collections::BTreeMap;

pub type Env = BTreeMap<String, String>;

/// What interpolating one value found.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub value: String,
    /// Variables used without a default that are not set: Compose
    /// substitutes an empty string (and warns).
    pub unset: Vec<String>,
}

/// Interpolates `s`; an error is what Compose would refuse (a `?` variable
/// unset, a malformed `${`).
pub fn interpolate(s: &str, env: &Env) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let ch = s[i..].chars().next().unwrap_or('\0');
            out.value.push(ch);
            i += ch.len_utf8();
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.value.push('$');
                i += 2;
            }
            Some(b'{') => {
                let end = closing_brace(s, i + 2)
                    .ok_or_else(|| format!("`{s}`: a `${{` has no closing `}}`"))?;
                let inner = &s[i + 2..end];
                expand(inner, env, &mut out)?;
                i = end + 1;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let len = name_len(&s[i + 1..]);
                let name = &s[i + 1..i + 1 + len];
                match env.get(name) {
                    Some(v) => out.value.push_str(v),
                    None => out.unset.push(name.to_string()),
                }
                i += 1 + len;
            }
            _ => {
                out.value.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn name_len(s: &str) -> usize {
    s.bytes()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
        .count()
}

fn closing_brace(s: &str, from: usize) -> Option<usize> {
    let mut depth = 1;
    let b = s.as_bytes();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'{' if i > 0 && b[i - 1] == b'$' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand(inner: &str, env: &Env, out: &mut Outcome) -> Result<(), String> {
    let len = name_len(inner);
    let name = &inner[..len];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(format!("`${{{inner}}}` is not a valid variable"));
    }
    let rest = &inner[len..];
    let value = env.get(name);
    let nonempty = value.is_some_and(|v| !v.is_empty());
    let sub = |text: &str, out: &mut Outcome| -> Result<(), String> {
        let o = interpolate(text, env)?;
        out.value.push_str(&o.value);
        out.unset.extend(o.unset);
        Ok(())
    };
    let (op, arg) = if let Some(a) = rest.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = rest.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = rest.strip_prefix(":+") {
        (":+", a)
    } else if rest.is_empty() {
        ("", "")
    } else {
        rest.split_at(1)
    };
    match op {
        "" => match value {
            Some(v) => out.value.push_str(v),
            None => out.unset.push(name.to_string()),
        },
        ":-" if nonempty => out.value.push_str(value.map_or("", |v| v)),
        ":-" => sub(arg, out)?,
        "-" => match value {
            Some(v) => out.value.push_str(v),
            None => sub(arg, out)?,
        },
        ":?" | "?" => {
            let ok = if op == ":?" {
                nonempty
            } else {
                value.is_some()
            };
            if !ok {
                let why = if arg.is_empty() {
                    "required variable is missing a value"
                } else {
                    arg
                };
                return Err(format!("`{name}` is not set: {why}"));
            }
            out.value.push_str(value.map_or("", |v| v));
        }
        ":+" if nonempty => sub(arg, out)?,
        "+" if value.is_some() => sub(arg, out)?,
        ":+" | "+" => {}
        _ => return Err(format!("`${{{inner}}}`: unknown modifier after `{name}`")),
    }
    Ok(())
}

/// A `.env` file: `KEY=VALUE` lines, `#` comments, optional `export`,
/// single quotes literal, double quotes with escapes, ` #` ending an unquoted
/// value. Returns the variables and the lines that are not assignments.
pub fn parse_env_file(text: &str) -> (Env, Vec<usize>) {
    let mut env = Env::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bad.push(n + 1);
            continue;
        };
        let key = key.trim();
        if key.is_empty() || name_len(key) != key.len() {
            bad.push(n + 1);
            continue;
        }
        let value = value.trim();
        let value = if let Some(v) = value.strip_prefix('\'') {
            v.split('\'').next().unwrap_or("").to_string()
        } else if let Some(v) = value.strip_prefix('"') {
            v.split('"').next().unwrap_or("").replace("\\n", "\n")
        } else {
            value.split(" #").next().unwrap_or("").trim().to_string()
        };
        env.insert(key.to_string(), value);
    }
    (env, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        [("TAG", "1.27"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(s: &str) -> String {
        interpolate(s, &env()).unwrap().value
    }

    #[test]
    fn forms() {
        assert_eq!(ok("nginx:${TAG}"), "nginx:1.27");
        assert_eq!(ok("nginx:$TAG-x"), "nginx:1.27-x");
        assert_eq!(ok("${NOPE:-1.0}"), "1.0");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY-d}"), "");
        assert_eq!(ok("${TAG:+yes}"), "yes");
        assert_eq!(ok("${NOPE:+yes}"), "");
        assert_eq!(ok("$$HOME"), "$HOME");
        assert_eq!(ok("${NOPE:-${TAG}}"), "1.27");
        let o = interpolate("a${NOPE}b$ALSO", &env()).unwrap();
        assert_eq!(o.value, "ab");
        assert_eq!(o.unset, vec!["NOPE", "ALSO"]);
    }

    #[test]
    fn refusals() {
        assert!(
            interpolate("${NOPE:?set NOPE in .env}", &env())
                .unwrap_err()
                .contains("set NOPE in .env")
        );
        assert!(interpolate("${EMPTY:?x}", &env()).is_err());
        assert!(interpolate("${EMPTY?x}", &env()).is_ok());
        assert!(interpolate("${TAG", &env()).is_err());
        assert!(interpolate("${1A}", &env()).is_err());
    }

    #[test]
    fn env_file() {
        let (e, bad) =
            parse_env_file("# c\nTAG=1.0 # comment\nexport A='x # y'\nB=\"q\"\nnot a line\n");
        assert_eq!(e["TAG"], "1.0");
        assert_eq!(e["A"], "x # y");
        assert_eq!(e["B"], "q");
        assert_eq!(bad, vec![5]);
    }
}
