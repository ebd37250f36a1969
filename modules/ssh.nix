# SSH: the only way in, by key only. The admin keys come from
# keys/authorized_keys (what `cargo xtask add-key` writes) via the inventory.
{
  lib,
  inventory,
  host,
  ...
}:
let
  keys = inventory.admin_keys;
  nonRoot = host.user != "root";
  # Identities in Git (`cargo xtask identity`): hosts/<name>/ssh_host_ed25519_key.pub.
  hostKeys = inventory.host_keys;
  ownKey = hostKeys.${host.name} or null;
  # "type base64" without the comment, as known_hosts wants it.
  keyOf = ls: lib.concatStringsSep " " (lib.take 2 (lib.splitString " " (builtins.head ls)));
  names =
    h:
    lib.unique (
      [
        h.name
        "${h.name}.local"
      ]
      ++ (if h.port == 22 then [ h.address ] else [ "[${h.address}]:${toString h.port}" ])
    );
in
{
  assertions = [
    {
      assertion = keys != [ ];
      message = "keys/authorized_keys has no admin key, so the Pi would be unreachable: run `cargo xtask add-key`";
    }
  ]
  ++ lib.mapAttrsToList (name: ls: {
    assertion = builtins.length ls == 1 && lib.hasPrefix "ssh-ed25519 " (builtins.head ls);
    message = "hosts/${name}/ssh_host_ed25519_key.pub must hold one ssh-ed25519 public key: run `cargo xtask identity ${name}`";
  }) hostKeys;

  # The host's identity was made on the workstation and written onto its card
  # by `cargo xtask sd` at this path; sshd then uses it from the first boot
  # (NixOS only generates a key that is missing). One key: the one in Git.
  services.openssh.hostKeys = lib.mkIf (ownKey != null) (
    lib.mkDefault [
      {
        type = "ed25519";
        path = "/etc/ssh/ssh_host_ed25519_key";
      }
    ]
  );

  # Every Pi knows the others' keys (ssh from one Pi to another: no prompt).
  programs.ssh.knownHosts = lib.mapAttrs (name: ls: {
    hostNames = names inventory.hosts.${name};
    publicKey = keyOf ls;
  }) (lib.filterAttrs (name: _: inventory.hosts ? ${name}) hostKeys);

  services.openssh = {
    enable = true;
    ports = [ host.port ];
    openFirewall = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };

  users.users = lib.mkMerge [
    { root.openssh.authorizedKeys.keys = keys; }
    # The inventory's SSH user, when it is not root: a wheel user with the
    # same keys, who deploys with sudo (it has no password to type).
    (lib.mkIf nonRoot {
      ${host.user} = {
        isNormalUser = true;
        extraGroups = [ "wheel" ];
        openssh.authorizedKeys.keys = keys;
      };
    })
  ];
  security.sudo.wheelNeedsPassword = lib.mkIf nonRoot (lib.mkDefault false);
}
