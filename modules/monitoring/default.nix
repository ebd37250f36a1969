# Central monitoring, declared from the inventory (lib/monitoring.nix):
# every Pi runs the node exporter and sends its journal to the host named
# by `[fleet] monitoring`, which runs Prometheus, Grafana and the journal
# receiver. Nothing here when the fleet names no monitoring host.
{ lib, monitoring, ... }:
{
  imports = [
    ./node-exporter.nix
    ./journal.nix
    ./prometheus.nix
    ./grafana.nix
  ];

  assertions = lib.optional (monitoring.host != null) {
    assertion = builtins.match "[0-9.]+" monitoring.host.address != null;
    message = "hosts/fleet.toml: the monitoring host `${monitoring.host.name}` has address `${monitoring.host.address}`; every Pi's firewall lets only it read metrics, which needs an IPv4 address: give it a static one (`address = \"192.0.2.10/24\"` with `gateway` and `dns`) or an IP its router reserves, then `cargo xtask check`";
  };
}
