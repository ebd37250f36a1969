# Every Pi: the Prometheus node exporter with the collectors that matter on
# a Pi (temperature, systemd units for failed units and containers), its
# port open only to the monitoring host.
{
  lib,
  monitoring,
  ...
}:
let
  server = monitoring.host;
in
lib.mkIf (server != null) {
  services.prometheus.exporters.node = {
    enable = lib.mkDefault true;
    port = monitoring.nodeExporterPort;
    # thermal_zone and hwmon (temperature, the Pi's under-voltage alarm)
    # are on by default; systemd gives failed units and containers
    # (docker-<name>.service); textfile reads the firmware's throttled flags.
    enabledCollectors = [
      "systemd"
      "processes"
      "textfile"
    ];
    extraFlags = [ "--collector.textfile.directory=/run/prometheus-node-exporter/textfile" ];
    # Nothing a Pi has: RAID, NFS, ZFS, InfiniBand, Fibre Channel, tape, IPVS.
    disabledCollectors = [
      "mdadm"
      "nfs"
      "nfsd"
      "zfs"
      "xfs"
      "btrfs"
      "bcache"
      "infiniband"
      "fibrechannel"
      "tapestats"
      "ipvs"
      "rapl"
      "nvme"
      "edac"
      "bonding"
    ];
    openFirewall = true;
    firewallFilter = "-p tcp -s ${server.address} --dport ${toString monitoring.nodeExporterPort}";
  };

  # The firmware's throttled flags (what `vcgencmd get_throttled` says) as
  # the metric pi_throttled_flags, refreshed every 30 s.
  systemd.services.pi-throttled-metric = {
    description = "Write the firmware's throttled flags for the node exporter";
    serviceConfig.Type = "oneshot";
    script = ''
      d=/run/prometheus-node-exporter/textfile
      mkdir -p "$d"
      for f in /sys/devices/platform/soc/soc:firmware/get_throttled /sys/devices/platform/soc/*.firmware/get_throttled; do
        if [ -r "$f" ]; then
          printf '# HELP pi_throttled_flags The Raspberry Pi firmware get_throttled word.\n# TYPE pi_throttled_flags gauge\npi_throttled_flags %d\n' "0x$(cat "$f")" > "$d/throttled.prom.tmp"
          mv "$d/throttled.prom.tmp" "$d/throttled.prom"
          break
        fi
      done
    '';
  };
  systemd.timers.pi-throttled-metric = {
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnBootSec = "10s";
      OnUnitActiveSec = "30s";
    };
  };
}
