# The fleet as Nix sees it, read with builtins only (no nixpkgs), so that
# `nix eval .#inventory` works offline. `cargo xtask check` proves that this
# view equals the one the xtask reads from the same files.
{ root }:
let
  fleet = builtins.fromTOML (builtins.readFile (root + "/hosts/fleet.toml"));

  models = [
    "pi3"
    "pi4"
    "zero2w"
  ];

  # `address = "a.b.c.d/len"`: a static address the Pi sets itself (with
  # `gateway` and `dns`); SSH goes to the address alone. Anything else is
  # the SSH destination as written (`<name>.local`, an IP, a DNS name).
  static =
    h:
    let
      m = builtins.match "([0-9.]+)/([0-9]+)" h.address;
    in
    if m == null then
      null
    else
      {
        address = builtins.elemAt m 0;
        prefix_length = builtins.fromJSON (builtins.elemAt m 1);
        gateway = h.gateway or null;
        dns = h.dns or [ ];
      };

  # The system around the SD card layout (modules/hardware/sd-card.nix):
  # "lean" (the default) or "generic", nixpkgs' own aarch64 SD image module.
  profiles = [
    "lean"
    "generic"
  ];

  host =
    h:
    if !(builtins.elem (h.model or null) models) then
      throw "hosts/fleet.toml: host `${h.name or "?"}` needs a model of pi3, pi4 or zero2w; run `cargo xtask check`"
    else if !(builtins.elem (h.profile or "lean") profiles) then
      throw "hosts/fleet.toml: host `${h.name or "?"}` has a profile other than lean or generic; run `cargo xtask check`"
    else
      let
        static_ipv4 = static h;
      in
      {
        inherit (h) name model;
        inherit static_ipv4;
        address = if static_ipv4 == null then h.address else static_ipv4.address;
        user = h.user or "root";
        port = h.port or 22;
        tags = h.tags or [ ];
        build_host = h.build_host or null;
        wifi = h.wifi or null;
        profile = h.profile or "lean";
      };

  keysFile = root + "/keys/authorized_keys";
  trim =
    s:
    let
      m = builtins.match "[[:space:]]*(.*[^[:space:]])[[:space:]]*" s;
    in
    if m == null then "" else builtins.head m;
  keyLines =
    file:
    if builtins.pathExists file then
      builtins.filter (l: l != "" && builtins.substring 0 1 l != "#") (
        map trim (builtins.filter builtins.isString (builtins.split "\n" (builtins.readFile file)))
      )
    else
      [ ];
  lines = keyLines keysFile;
  # A host's identity: the public SSH host key `cargo xtask identity` wrote.
  hostKeyLines = h: keyLines (root + "/hosts/${h.name}/ssh_host_ed25519_key.pub");

  # secrets/secrets.toml (written by `cargo xtask secret`): who reads each
  # secrets/<name>.age, and its owner and mode on the Pi.
  secretsFile = root + "/secrets/secrets.toml";
  hostList = fleet.host or [ ];
  readersOf =
    e:
    builtins.sort builtins.lessThan (
      map (h: h.name) (
        builtins.filter (
          h:
          (e.all or false)
          || builtins.elem h.name (e.hosts or [ ])
          || builtins.any (t: builtins.elem t (h.tags or [ ])) (e.tags or [ ])
        ) hostList
      )
    );
in
{
  # Every secret: the hosts that read it (sorted), owner, group, mode.
  secrets = builtins.mapAttrs (name: e: {
    readers = readersOf e;
    owner = e.owner or "root";
    group = e.group or "root";
    mode = e.mode or "0400";
  }) (if builtins.pathExists secretsFile then builtins.fromTOML (builtins.readFile secretsFile) else { });

  hosts = builtins.listToAttrs (
    map (h: {
      inherit (h) name;
      value = h;
    }) (map host (fleet.host or [ ]))
  );

  # Settings of the whole fleet: the [fleet] table.
  fleet = {
    # Wi-Fi regulatory domain (ISO 3166-1 alpha-2), wpa_supplicant's `country=`.
    wifi_country = (fleet.fleet or { }).wifi_country or null;
    # The binary cache CI pushes to (substituter URL) and its public key.
    cache = (fleet.fleet or { }).cache or null;
    cache_key = (fleet.fleet or { }).cache_key or null;
    # The host that runs Prometheus, Grafana and the journal receiver
    # (modules/monitoring/); null: no central monitoring.
    monitoring = (fleet.fleet or { }).monitoring or null;
  };

  # Hosts with an identity in Git: their ssh_host_ed25519_key.pub lines
  # (comments dropped); hosts without one are absent.
  host_keys = builtins.listToAttrs (
    builtins.concatMap (
      h:
      let
        ls = hostKeyLines h;
      in
      if ls == [ ] then
        [ ]
      else
        [
          {
            inherit (h) name;
            value = ls;
          }
        ]
    ) (fleet.host or [ ])
  );

  # authorized_keys lines (comments dropped) for every Pi's admin users.
  admin_keys = lines;
}
