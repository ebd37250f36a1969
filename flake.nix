{
  description = "pi-nixos: a fleet of Raspberry Pis running NixOS, defined by this repository";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      # The fleet, read from hosts/fleet.toml and keys/authorized_keys with
      # builtins only: `nix eval .#inventory` needs no nixpkgs.
      inventory = import ./lib/inventory.nix { root = ./.; };

      # Every host's system: the shared modules, its model's hardware module
      # (chosen in modules/default.nix) and hosts/<name>/default.nix.
      mkHost =
        name: host:
        lib.nixosSystem {
          specialArgs = { inherit inventory host; };
          modules = [
            ./modules
            (./hosts + "/${name}")
          ];
        };

      hosts = builtins.mapAttrs mkHost inventory.hosts;

      pkgs = nixpkgs.legacyPackages.x86_64-linux;
    in
    {
      inherit inventory;

      # `<host>` and `<host>-sd` are the same system: the SD image boots
      # exactly what `cargo xtask deploy` installs.
      nixosConfigurations =
        hosts // lib.mapAttrs' (name: system: lib.nameValuePair "${name}-sd" system) hosts;

      formatter.x86_64-linux = pkgs.nixfmt;

      devShells.x86_64-linux.default = pkgs.mkShell {
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
    };
}
