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
in
{
  assertions = [
    {
      assertion = keys != [ ];
      message = "keys/authorized_keys has no admin key, so the Pi would be unreachable: run `cargo xtask add-key`";
    }
  ];

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
