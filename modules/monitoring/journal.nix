# Logs that outlive a dead SD card: every Pi uploads its journal to the
# monitoring host (systemd-journal-upload), which keeps them under
# /var/log/journal/remote/ (systemd-journal-remote), one file per Pi;
# `cargo xtask logs --central` reads them there. Plain HTTP on the LAN.
{
  lib,
  host,
  monitoring,
  ...
}:
let
  server = monitoring.host;
in
lib.mkIf (server != null) {
  services.journald.upload = lib.mkIf (host.name != server.name) {
    enable = lib.mkDefault true;
    settings.Upload = {
      URL = "http://${server.address}:${toString monitoring.journalRemotePort}";
      # `-`: no client key and certificate, no server certificate check
      # (systemd's journal-upload.c skips them for "-"; plain HTTP). Set
      # explicitly: some nixpkgs versions give the key and the timeout no
      # default.
      ServerKeyFile = "-";
      ServerCertificateFile = "-";
      TrustedCertificateFile = "-";
      NetworkTimeoutSec = "30s";
    };
  };

  services.journald.remote = lib.mkIf (host.name == server.name) {
    enable = lib.mkDefault true;
    listen = "http";
    port = monitoring.journalRemotePort;
    settings.Remote.SplitMode = "host";
  };
  networking.firewall.allowedTCPPorts = lib.mkIf (host.name == server.name) [
    monitoring.journalRemotePort
  ];
}
