# Central monitoring computed from the inventory with builtins only, so
# `nix eval --json .#monitoring.prometheus` works offline. The monitoring
# host's Prometheus (modules/monitoring/prometheus.nix) runs exactly this
# configuration.
{ inventory }:
let
  hosts = builtins.attrValues inventory.hosts;
  nodeExporterPort = 9100;
  journalRemotePort = 19532;
in
{
  inherit nodeExporterPort journalRemotePort;

  # The host named by `[fleet] monitoring`, or null.
  host =
    if inventory.fleet.monitoring == null then null else inventory.hosts.${inventory.fleet.monitoring};

  # The Prometheus configuration (prometheus.yml as an attrset). One
  # static_config per host, labelled with its inventory name, model and
  # tags (`,docker,apps,`: select with `tags=~".*,docker,.*"`).
  prometheus = {
    global = {
      scrape_interval = "30s";
      scrape_timeout = "10s";
      evaluation_interval = "30s";
    };
    scrape_configs = [
      {
        job_name = "node";
        static_configs = map (h: {
          targets = [ "${h.address}:${toString nodeExporterPort}" ];
          labels = {
            inherit (h) name model;
            tags = "," + builtins.concatStringsSep "," h.tags + ",";
          };
        }) hosts;
      }
    ];
  };
}
