# Wi-Fi for hosts with `wifi = "<SSID>"` in the inventory (required for the
# Zero 2 W, which has no Ethernet). The password is never in Git or the Nix
# store: `cargo xtask sd` writes it into the card image's root partition as
# `secretsFile` (root, 0600), and wpa_supplicant reads it as `ext:psk`. The
# fleet's regulatory domain ([fleet] wifi_country) is wpa_supplicant's
# `country=`.
{
  config,
  lib,
  pkgs,
  inventory,
  host,
  ...
}:
let
  secretsFile = config.networking.wireless.secretsFile;
  # The folder `cargo xtask sd` creates for it (root, 0700).
  ownDir = "/var/lib/wifi";
  country = inventory.fleet.wifi_country;
  validCountry = country != null && builtins.match "[A-Z][A-Z]" country != null;
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
    ];

    networking.wireless = {
      enable = true;
      # Keep in step with SECRETS_FILE in xtask/src/image/wifi.rs (a test checks).
      secretsFile = lib.mkDefault "${ownDir}/secrets.conf";
      networks.${host.wifi}.pskRaw = "ext:psk";
      # A file of its own (`-I`), so a host's networking.wireless.extraConfig
      # (a plain string: a second definition would replace or clash) stays free.
      extraConfigFiles = lib.optional validCountry (
        pkgs.writeText "wpa_supplicant-country.conf" ''
          country=${country}
        ''
      );
    };

    # wpa_supplicant runs as its own user, whose id is only known once the
    # Pi has booted: hand the file to its group then (still not
    # world-readable). Without the file wpa_supplicant cannot start (its
    # bind mount of the file fails), so this unit fails first, with the
    # reason in the journal, and `cargo xtask status` lists it as a failed
    # unit; wpa_supplicant, which requires it, is then not started.
    systemd.services.wifi-secrets = lib.mkIf (secretsFile != null) {
      description = "Let wpa_supplicant read the Wi-Fi secrets file";
      requiredBy = [ "wpa_supplicant.service" ];
      before = [ "wpa_supplicant.service" ];
      # Once per boot: restarting it on a deploy would restart wpa_supplicant
      # (Requires=) and cut a Wi-Fi-only Pi off mid-deploy.
      restartIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      # The reason goes to the journal (`journalctl -u wifi-secrets`).
      script = ''
        ${pkgs.runtimeShell} ${./wifi-secrets.sh} ${
          lib.escapeShellArgs [
            secretsFile
            (if builtins.dirOf secretsFile == ownDir then ownDir else "")
            "wpa_supplicant"
            host.name
            host.wifi
          ]
        }
      '';
    };
  };
}
