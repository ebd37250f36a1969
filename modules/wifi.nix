# Wi-Fi for hosts with `wifi = "<SSID>"` in the inventory (required for the
# Zero 2 W, which has no Ethernet). The password is never in Git or the Nix
# store: `cargo xtask sd` writes it into the card image's root partition as
# `secretsFile` (root, 0600), and wpa_supplicant reads it as `ext:psk`.
{
  config,
  lib,
  host,
  ...
}:
let
  secretsFile = config.networking.wireless.secretsFile;
  # The folder `cargo xtask sd` creates for it (root, 0700).
  ownDir = "/var/lib/wifi";
in
{
  config = lib.mkIf (host.wifi != null) {
    networking.wireless = {
      enable = true;
      # Keep in step with SECRETS_FILE in xtask/src/image/wifi.rs (a test checks).
      secretsFile = lib.mkDefault "${ownDir}/secrets.conf";
      networks.${host.wifi}.pskRaw = "ext:psk";
    };

    # wpa_supplicant runs as its own user, whose id is only known once the
    # Pi has booted: hand the file to its group then (still not
    # world-readable). Skipped when the card carries no secrets file.
    systemd.services.wifi-secrets = {
      description = "Let wpa_supplicant read the Wi-Fi secrets file";
      wantedBy = [ "wpa_supplicant.service" ];
      before = [ "wpa_supplicant.service" ];
      unitConfig.ConditionPathExists = secretsFile;
      serviceConfig.Type = "oneshot";
      script = ''
        chown root:wpa_supplicant ${secretsFile}
        chmod 0640 ${secretsFile}
      ''
      + lib.optionalString (builtins.dirOf secretsFile == ownDir) ''
        chown root:wpa_supplicant ${ownDir}
        chmod 0750 ${ownDir}
      '';
    };
  };
}
