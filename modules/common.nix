# Settings every Pi shares.
{ lib, ... }:
{
  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];
  time.timeZone = lib.mkDefault "UTC";
  system.stateVersion = "26.05";
}
