# The monitoring host: Grafana on port 3000 with the fleet's Prometheus as
# its data source and the fleet dashboard (fleet-dashboard.json: CPU,
# memory, temperature, throttling, disk, network, failed units,
# containers) provisioned read-only from the repository.
{
  lib,
  pkgs,
  host,
  monitoring,
  ...
}:
lib.mkIf (monitoring.host != null && host.name == monitoring.host.name) {
  services.grafana = {
    enable = lib.mkDefault true;
    settings.server = {
      http_addr = lib.mkDefault "0.0.0.0";
      http_port = lib.mkDefault 3000;
    };
    # 26.05 has no default key: one made on the host at first start (below),
    # read with Grafana's file provider, so it never enters the Nix store.
    settings.security.secret_key = lib.mkDefault "$__file{/var/lib/grafana/secret-key}";
    provision = {
      enable = true;
      datasources.settings.datasources = [
        {
          name = "Prometheus";
          uid = "fleet-prometheus";
          type = "prometheus";
          access = "proxy";
          url = "http://127.0.0.1:9090";
          isDefault = true;
        }
      ];
      dashboards.settings.providers = [
        {
          name = "fleet";
          type = "file";
          disableDeletion = true;
          options.path = pkgs.runCommand "fleet-dashboards" { } ''
            mkdir -p $out
            cp ${./fleet-dashboard.json} $out/fleet.json
          '';
        }
      ];
    };
  };
  systemd.services.grafana-secret-key = {
    description = "Make Grafana's secret key once";
    wantedBy = [ "grafana.service" ];
    before = [ "grafana.service" ];
    serviceConfig.Type = "oneshot";
    script = ''
      f=/var/lib/grafana/secret-key
      if [ ! -s "$f" ]; then
        mkdir -p /var/lib/grafana
        (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f")
        chown grafana:grafana "$f"
      fi
    '';
  };
  networking.firewall.allowedTCPPorts = [ 3000 ];
}
