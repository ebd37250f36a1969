# Wi-Fi for hosts with `wifi = "<SSID>"` in the inventory (required for the
# Zero 2 W, which has no Ethernet). The password is the age secret
# `wifi-<host>` (`cargo xtask wifi <host>`, secrets/wifi-<host>.age, its line
# `psk=<password>`), encrypted to the host's key and the admin keys: never in
# Git in the clear, never in the Nix store. agenix decrypts it at activation
# (modules/secrets.nix) into /run/agenix/wifi-<host>, root:wpa_supplicant
# 0440, before systemd starts wpa_supplicant on boot and before a deploy
# restarts it; wpa_supplicant reads it as `secretsFile` (`ext:psk`). The
# fleet's regulatory domain ([fleet] wifi_country) is its `country=`.
{
  config,
  lib,
  pkgs,
  inventory,
  host,
  ...
}:
let
  # Keep in step with xtask/src/wifi.rs (a test checks).
  secretName = "wifi-${host.name}";
  secret = inventory.secrets.${secretName} or null;
  reads = secret != null && builtins.elem host.name secret.readers;
  country = inventory.fleet.wifi_country;
  validCountry = country != null && builtins.match "[A-Z][A-Z]" country != null;
  # wpa_supplicant's units: one for all interfaces, or one per listed interface.
  interfaces = config.networking.wireless.interfaces;
  units =
    if interfaces == [ ] then [ "wpa_supplicant" ] else map (i: "wpa_supplicant-${i}") interfaces;
in
{
  config = lib.mkIf (host.wifi != null) {
    assertions = [
      {
        assertion = validCountry;
        message = "host `${host.name}` joins Wi-Fi, but hosts/fleet.toml has no valid Wi-Fi country: add `[fleet]` with `wifi_country = \"GB\"` (your country's ISO 3166-1 alpha-2 code); `cargo xtask check` shows where";
      }
      {
        # The brcmfmac firmware of the Pi 3, Pi 4 and Zero 2 W: on its own
        # (lean profile) or with all of linux-firmware (generic profile);
        # see hardware/sd-card.nix.
        assertion = config.pi-nixos.wifiFirmware || config.hardware.enableRedistributableFirmware;
        message = "host `${host.name}` joins Wi-Fi, but neither pi-nixos.wifiFirmware nor hardware.enableRedistributableFirmware is on, so its Wi-Fi chip has no firmware: remove the setting that turns it off";
      }
      {
        assertion = reads;
        message = "host `${host.name}` joins the Wi-Fi `${host.wifi}`, but no secret `${secretName}` that it reads holds the password: run `cargo xtask wifi ${host.name}`, commit secrets/, then deploy it (or write its card with `cargo xtask sd ${host.name}`)";
      }
    ];

    networking.wireless = {
      enable = true;
      # agenix's path: a link into the current generation of /run/agenix.d;
      # systemd follows it when it bind-mounts the file into wpa_supplicant's
      # private root, so wpa_supplicant (its own user) reads the decrypted file.
      secretsFile = lib.mkIf reads (lib.mkDefault config.age.secrets.${secretName}.path);
      networks.${host.wifi}.pskRaw = "ext:psk";
      # A file of its own (`-I`), so a host's networking.wireless.extraConfig
      # (a plain string: a second definition would replace or clash) stays free.
      extraConfigFiles = lib.optional validCountry (
        pkgs.writeText "wpa_supplicant-country.conf" ''
          country=${country}
        ''
      );
    };

    # A deploy that changes the password: the new ciphertext is a new store
    # path, so the unit changes and switch-to-configuration restarts it after
    # the activation (where agenix decrypted the new value); the running one
    # keeps the old file bind-mounted until then. Unchanged secret: no restart.
    # With systemd-sysusers or userborn, agenix decrypts in a unit of its own
    # (agenix-install-secrets), which wpa_supplicant must then wait for.
    systemd.services = lib.mkIf reads (
      lib.genAttrs units (_: {
        restartTriggers = [ config.age.secrets.${secretName}.file ];
        after = [ "agenix-install-secrets.service" ];
      })
    );
  };
}
