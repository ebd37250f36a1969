{
  description = "pi-nixos: a fleet of Raspberry Pis running NixOS, defined by this repository";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  # Secrets on the Pis (`cargo xtask secret`): agenix decrypts them with the
  # host key at activation. Pinned in flake.lock (rev and narHash confirmed
  # in two public lock files); its darwin and home-manager inputs are cut off
  # so nothing else is fetched.
  inputs.agenix = {
    url = "github:ryantm/agenix";
    inputs.nixpkgs.follows = "nixpkgs";
    inputs.darwin.follows = "";
    inputs.home-manager.follows = "";
  };

  outputs =
    {
      self,
      nixpkgs,
      agenix,
    }:
    let
      inherit (nixpkgs) lib;

      # The fleet, read from hosts/fleet.toml and keys/authorized_keys with
      # builtins only: `nix eval .#inventory` needs no nixpkgs.
      inventory = import ./lib/inventory.nix { root = ./.; };

      # Central monitoring from the inventory, builtins only:
      # `nix eval --json .#monitoring.prometheus` is the Prometheus config.
      monitoring = import ./lib/monitoring.nix { inherit inventory; };

      # Every host's config.txt, builtins only: `nix eval --raw .#configTxt.<host>`.
      configTxt = import ./lib/config-txt.nix { root = ./.; };

      # Every host's system: the shared modules, its model's hardware module
      # (chosen in modules/default.nix) and hosts/<name>/default.nix.
      mkHost =
        name: host:
        lib.nixosSystem {
          specialArgs = { inherit inventory host monitoring; };
          modules = [
            agenix.nixosModules.default
            ./modules
            (./hosts + "/${name}")
          ];
        };

      hosts = builtins.mapAttrs mkHost inventory.hosts;

      # The workstation (x86_64) and aarch64 machines: a Pi, a build host.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forEachSystem = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      inherit inventory;

      # `prometheus`: the monitoring host's scrape configuration.
      monitoring = { inherit (monitoring) prometheus; };

      # `<host>`: the config.txt on that host's FIRMWARE partition.
      configTxt = builtins.mapAttrs (_: host: (configTxt.forHost host).text) inventory.hosts;

      # `<host>` and `<host>-sd` are the same system: the SD image boots
      # exactly what `cargo xtask deploy` installs.
      nixosConfigurations =
        hosts // lib.mapAttrs' (name: system: lib.nameValuePair "${name}-sd" system) hosts;

      # `nix flake check --no-build --all-systems` evaluates every host's
      # system (assertions included); without --no-build it builds them.
      # Built with builtins only, so the host names are known without nixpkgs.
      checks.aarch64-linux = builtins.mapAttrs (_: system: system.config.system.build.toplevel) hosts;

      formatter = forEachSystem (pkgs: pkgs.nixfmt);

      devShells = forEachSystem (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            rustfmt
            clippy
            zstd
            qemu
            nixfmt
            openssh
            dosfstools
            mtools
            e2fsprogs
          ];
        };
      });
    };
}
