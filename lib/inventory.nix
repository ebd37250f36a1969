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

  host =
    h:
    if !(builtins.elem (h.model or null) models) then
      throw "hosts/fleet.toml: host `${h.name or "?"}` needs a model of pi3, pi4 or zero2w; run `cargo xtask check`"
    else
      {
        inherit (h) name model address;
        user = h.user or "root";
        port = h.port or 22;
        tags = h.tags or [ ];
        build_host = h.build_host or null;
        wifi = h.wifi or null;
      };

  keysFile = root + "/keys/authorized_keys";
  trim =
    s:
    let
      m = builtins.match "[[:space:]]*(.*[^[:space:]])[[:space:]]*" s;
    in
    if m == null then "" else builtins.head m;
  lines =
    if builtins.pathExists keysFile then
      map trim (builtins.filter builtins.isString (builtins.split "\n" (builtins.readFile keysFile)))
    else
      [ ];
in
{
  hosts = builtins.listToAttrs (
    map (h: {
      inherit (h) name;
      value = h;
    }) (map host (fleet.host or [ ]))
  );

  # authorized_keys lines (comments dropped) for every Pi's admin users.
  admin_keys = builtins.filter (l: l != "" && builtins.substring 0 1 l != "#") lines;
}
