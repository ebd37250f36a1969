# Settings every Pi shares: Nix, time, locale, logs, memory.
{
  lib,
  options,
  inventory,
  ...
}:
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
    # The fleet's binary cache ([fleet] cache in hosts/fleet.toml), which CI
    # pushes every host's system to: deploys substitute from it on the Pi.
    substituters = lib.optional (inventory.fleet.cache != null) inventory.fleet.cache;
    trusted-public-keys = lib.optional (inventory.fleet.cache_key != null) inventory.fleet.cache_key;
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

  # SD cards are small and wear out: cap the journal. Host settings add to
  # this rather than replace it. nixpkgs 26.05 has only
  # services.journald.extraConfig (lines, merged): the cap goes first, so a
  # host's own `SystemMaxUse=` line, written later, wins. 26.11 removes
  # extraConfig for services.journald.settings.Journal (nixpkgs #536538),
  # whose keys merge one by one; this module uses it where it exists.
  services.journald =
    if options.services.journald ? settings then
      { settings.Journal.SystemMaxUse = lib.mkDefault "200M"; }
    else
      {
        extraConfig = lib.mkBefore ''
          SystemMaxUse=200M
        '';
      };

  # Compressed swap in RAM: Pis have 512 MB to 8 GB and no swap partition.
  zramSwap.enable = lib.mkDefault true;

  system.stateVersion = "26.05";
}
