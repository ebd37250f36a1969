# Settings every Pi shares: Nix, time, locale, logs, memory.
{ lib, ... }:
{
  nix.settings = {
    experimental-features = [
      "nix-command"
      "flakes"
    ];
    # Deploys copy closures as the inventory's SSH user: root, or a wheel user.
    trusted-users = [
      "root"
      "@wheel"
    ];
  };

  # Weekly garbage collection; generations from the last 30 days stay, so a
  # rollback to a recent deploy is always possible.
  nix.gc = {
    automatic = lib.mkDefault true;
    dates = lib.mkDefault "weekly";
    options = lib.mkDefault "--delete-older-than 30d";
  };

  time.timeZone = lib.mkDefault "UTC";
  i18n.defaultLocale = lib.mkDefault "en_US.UTF-8";

  # SD cards are small and wear out: cap the journal.
  services.journald.extraConfig = lib.mkDefault ''
    SystemMaxUse=200M
  '';

  # Compressed swap in RAM: Pis have 512 MB to 8 GB and no swap partition.
  zramSwap.enable = lib.mkDefault true;

  system.stateVersion = "26.05";
}
