# Secrets (`cargo xtask secret`, documentation/secrets.md): the ones this host
# reads, as secrets/secrets.toml says through the inventory, decrypted by
# agenix with the host's SSH key at activation into /run/agenix/<name> (a
# ramfs), with the owner, group and mode the file gives. Only the encrypted
# secrets/<name>.age enters the Nix store; the value never does. The card
# carries the host key, so this works from the first boot.
{
  lib,
  inventory,
  host,
  ...
}:
let
  mine = lib.filterAttrs (_: s: builtins.elem host.name s.readers) inventory.secrets;
in
{
  assertions = [
    {
      assertion = mine == { } || inventory.host_keys ? ${host.name};
      message = "host ${host.name} reads secrets (${lib.concatStringsSep ", " (builtins.attrNames mine)}) but has no identity to decrypt them with: run `cargo xtask identity ${host.name}`, `cargo xtask secret rekey`, commit, then write its card with `cargo xtask sd ${host.name}`";
    }
  ];

  # agenix's default age.identityPaths are the rsa/ed25519 entries of
  # services.openssh.hostKeys: modules/ssh.nix makes that the card's key.
  age.secrets = lib.mapAttrs (name: s: {
    file = ../secrets + "/${name}.age";
    inherit (s) owner group mode;
  }) mine;
}
