# The monitoring host: Prometheus with the scrape configuration computed
# from the inventory (lib/monitoring.nix, also `nix eval .#monitoring.prometheus`),
# sized for an SD card: 30 days or 2 GB, whichever comes first (the WAL is
# compressed, Prometheus's default since 2.20).
{
  lib,
  host,
  monitoring,
  ...
}:
lib.mkIf (monitoring.host != null && host.name == monitoring.host.name) {
  services.prometheus = {
    enable = lib.mkDefault true;
    port = lib.mkDefault 9090;
    # JSON is YAML: prometheus.yml is exactly the flake output.
    configText = builtins.toJSON monitoring.prometheus;
    retentionTime = lib.mkDefault "30d";
    extraFlags = [ "--storage.tsdb.retention.size=2GB" ];
  };
  networking.firewall.allowedTCPPorts = [ 9090 ];
}
