//! The lock-out guard: the new configuration must keep sshd on, and keep
//! authorized the key this deploy logged in with. The values come from Nix
//! (`nixosConfigurations.<host>.config…`), the same option paths as NixOS.

use serde::Deserialize;

use crate::inventory::Host;

/// What Nix says about a host's new configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Config {
    /// `services.openssh.enable`
    pub sshd: bool,
    /// `users.users.<user>.openssh.authorizedKeys.keys` and the contents of
    /// its `keyFiles`.
    pub keys: Vec<String>,
    /// `services.openssh.settings.PermitRootLogin`, when set.
    #[serde(rename = "permitRootLogin")]
    pub permit_root_login: Option<String>,
    /// `services.openssh.ports`, when set.
    pub ports: Option<Vec<u16>>,
    /// The toplevel derivation's `system` (e.g. `aarch64-linux`).
    pub system: String,
}

/// The `--apply` function for `nix eval …#nixosConfigurations.<h>.config`.
/// `user` is a validated inventory user name (lowercase, digits, `_`, `-`).
pub fn apply_expr(user: &str) -> String {
    format!(
        r#"c: let
  u = c.users.users."{user}" or {{ }};
  ak = (u.openssh or {{ }}).authorizedKeys or {{ }};
  o = c.services.openssh or {{ }};
in {{
  sshd = o.enable or false;
  keys = (ak.keys or [ ]) ++ map builtins.readFile (ak.keyFiles or [ ]);
  permitRootLogin = (o.settings or {{ }}).PermitRootLogin or null;
  ports = o.ports or null;
  system = c.system.build.toplevel.system;
}}"#
    )
}

/// The authorized_keys lines in `keys` (keyFiles may hold several each).
pub fn key_lines(c: &Config) -> Vec<String> {
    c.keys
        .iter()
        .flat_map(|k| k.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Refuses a configuration that would lock us out. `used` is the
/// fingerprint of the key this deploy authenticated with, `fingerprints`
/// those of [`key_lines`] (same order).
pub fn check(
    h: &Host,
    c: &Config,
    used: Option<&str>,
    fingerprints: &[String],
) -> Result<(), String> {
    let file = format!("hosts/{}/default.nix or modules/ssh.nix", h.name);
    if !c.sshd {
        return Err(format!(
            "lock-out guard: the new configuration of {} disables sshd (services.openssh.enable = false); the Pi would be unreachable. Set it back to true in {file}",
            h.name
        ));
    }
    if h.user == "root" && c.permit_root_login.as_deref() == Some("no") {
        return Err(format!(
            "lock-out guard: the new configuration of {} sets services.openssh.settings.PermitRootLogin = \"no\" but deploys log in as root; allow \"prohibit-password\" or set `user` in hosts/fleet.toml",
            h.name
        ));
    }
    if let Some(ports) = &c.ports
        && !ports.contains(&h.port)
    {
        return Err(format!(
            "lock-out guard: the new configuration of {} has sshd on port(s) {ports:?} but hosts/fleet.toml reaches it on port {}; make them agree",
            h.name, h.port
        ));
    }
    let Some(used) = used else {
        return Err(format!(
            "lock-out guard: cannot tell which SSH key this deploy logged in to {} with, so cannot prove the new configuration keeps it; log in with a plain key (not a certificate or password)",
            h.name
        ));
    };
    if !fingerprints.iter().any(|f| f == used) {
        return Err(format!(
            "lock-out guard: the new configuration of {} does not authorize the key this deploy logs in with ({used}) for user {}: the next deploy would be locked out. Add it with `cargo xtask add-key` (keys/authorized_keys) or to users.users.{}.openssh.authorizedKeys.keys",
            h.name, h.user, h.user
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Model;

    fn host() -> Host {
        Host {
            name: "pi".into(),
            model: Model::Pi4,
            address: "10.0.0.2".into(),
            user: "root".into(),
            port: 22,
            tags: vec![],
            build_host: None,
            wifi: None,
            profile: Default::default(),
            static_ipv4: None,
            line: 1,
        }
    }

    fn config() -> Config {
        Config {
            sshd: true,
            keys: vec!["ssh-ed25519 AAAA a\n# c\nssh-ed25519 BBBB b\n".into()],
            system: "aarch64-linux".into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_kept_key() {
        let c = config();
        assert_eq!(key_lines(&c).len(), 2);
        let fps = vec!["SHA256:a".to_string(), "SHA256:b".to_string()];
        assert!(check(&host(), &c, Some("SHA256:b"), &fps).is_ok());
    }

    #[test]
    fn refuses_lockouts() {
        let fps = vec!["SHA256:a".to_string()];
        let mut c = config();
        c.sshd = false;
        assert!(
            check(&host(), &c, Some("SHA256:a"), &fps)
                .unwrap_err()
                .contains("disables sshd")
        );
        let c = config();
        assert!(
            check(&host(), &c, Some("SHA256:z"), &fps)
                .unwrap_err()
                .contains("does not authorize")
        );
        assert!(check(&host(), &c, None, &fps).is_err());
        let mut c = config();
        c.permit_root_login = Some("no".into());
        assert!(
            check(&host(), &c, Some("SHA256:a"), &fps)
                .unwrap_err()
                .contains("PermitRootLogin")
        );
        let mut c = config();
        c.ports = Some(vec![2222]);
        assert!(
            check(&host(), &c, Some("SHA256:a"), &fps)
                .unwrap_err()
                .contains("port")
        );
    }

    #[test]
    fn parses_nix_json() {
        let c: Config = serde_json::from_str(
            r#"{"sshd":true,"keys":["k"],"permitRootLogin":null,"ports":null,"system":"x86_64-linux"}"#,
        )
        .unwrap();
        assert_eq!(c.system, "x86_64-linux");
    }
}
