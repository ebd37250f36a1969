# Raspberry Pi hardware: zero2w. Boots the NixOS aarch64 SD image layout.
{ modulesPath, ... }:
{
  imports = [ "${modulesPath}/installer/sd-card/sd-image-aarch64.nix" ];
  nixpkgs.hostPlatform = "aarch64-linux";
}
