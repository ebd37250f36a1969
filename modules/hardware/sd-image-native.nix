# The SD card image assembled with x86_64-linux tools:
# `system.build.sdImageNative`, what `cargo xtask sd` builds on an x86_64
# workstation without a build host. Only what must run aarch64 code (the
# host's system, its firmware files) stays aarch64; the ext4 root filled from
# the closure, the FAT partition, the partition table and the compression
# are made natively, several times faster than under QEMU.
#
# Nothing of nixpkgs' recipe is rewritten here, so nothing is lost or drifts:
# - the root filesystem is nixpkgs' own `sdImage.rootFilesystemCreator`
#   (make-ext4-fs.nix: closureInfo's store paths and `nix-path-registration`,
#   label, fixed UUID, faketime, fsck, shrink + 16 MiB, zstd), called with
#   the x86_64 package set and the arguments sd-image.nix passes;
# - the card is sd-image.nix's own buildCommand (MBR label-id, FAT at
#   `firmwarePartitionOffset`, `populateFirmwareCommands`, fsck.vfat,
#   `postBuildCommands`, zstd), run by an x86_64 derivation with the root
#   filesystem above in place of the aarch64 one;
# - `populateRootCommands` runs generic-extlinux-compatible's builder built
#   with x86_64 packages (a shell script of coreutils, sed and grep: it writes
#   the same extlinux.conf and copies the same kernel, initrd and dtbs).
# The system in the image is `config.system.build.toplevel`, the aarch64
# system `cargo xtask deploy` installs, and first boot (resize, `nix-store
# --load-db`) is sd-image.nix's `boot.postBootCommands`, untouched.
#
# `system.build.sdImage` stays nixpkgs' image built entirely for aarch64:
# what a native aarch64 machine (a build host, an aarch64 workstation)
# builds. Relies only on sd-image.nix's options, not on sd-image-aarch64.nix.
{
  config,
  options,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  cfg = config.sdImage;
  native = config.pi-nixos.sdImageNative.packages;

  # `s` with the path of derivation `from` replaced by `to`'s, depending on
  # `to` instead of `from` (everything else `s` refers to is kept).
  swap =
    from: to: s:
    builtins.appendContext
      (builtins.replaceStrings [ "${from}" ] [ "${to}" ] (builtins.unsafeDiscardStringContext s))
      (
        builtins.removeAttrs (builtins.getContext s) [
          (builtins.unsafeDiscardStringContext from.drvPath)
        ]
      );

  # generic-extlinux-compatible's `populateCmd` starts with this builder,
  # built with `pkgs.buildPackages` (aarch64 here); the same file built with
  # the x86_64 packages runs in its place.
  extlinuxBuilder =
    packages:
    import "${modulesPath}/system/boot/loader/generic-extlinux-compatible/extlinux-conf-builder.nix" {
      inherit lib;
      pkgs = packages;
    };
  populateRootCommands =
    swap (extlinuxBuilder pkgs.buildPackages) (extlinuxBuilder native)
      cfg.populateRootCommands;

  # sd-image.nix's `rootfsImage` (the default of sdImage.rootFilesystemImage),
  # with the x86_64 package set; a root filesystem image the configuration
  # sets itself is used as it is, as sd-image.nix does.
  ownRootfs =
    options.sdImage.rootFilesystemImage.highestPrio < (lib.mkOptionDefault null).priority;
  nativeRootfs = native.callPackage cfg.rootFilesystemCreator (
    {
      inherit (cfg) storePaths compressImage;
      populateImageCommands = populateRootCommands;
      volumeLabel = cfg.rootVolumeLabel;
    }
    // lib.optionalAttrs (cfg.rootPartitionUUID != null) { uuid = cfg.rootPartitionUUID; }
  );

  # sd-image.nix's card derivation names the aarch64 root filesystem image
  # in its buildCommand: the same text with the native one.
  emulated = config.system.build.sdImage;
  buildCommand =
    if ownRootfs then
      emulated.buildCommand
    else if lib.hasInfix "${cfg.rootFilesystemImage}" emulated.buildCommand then
      swap cfg.rootFilesystemImage nativeRootfs emulated.buildCommand
    else
      throw "modules/hardware/sd-image-native.nix: sd-image.nix's buildCommand no longer names sdImage.rootFilesystemImage, so the native image cannot use its own root filesystem: build `system.build.sdImage` instead (`cargo xtask sd --build-host …`) and adapt this module to the new nixpkgs";
in
{
  options.pi-nixos.sdImageNative.packages = lib.mkOption {
    type = lib.types.raw;
    default = import pkgs.path {
      localSystem.system = "x86_64-linux";
      config = { };
      overlays = [ ];
    };
    defaultText = lib.literalExpression ''import pkgs.path { localSystem.system = "x86_64-linux"; }'';
    description = ''
      The x86_64-linux package set whose tools assemble
      `system.build.sdImageNative` (the same nixpkgs, without the host's
      overlays: the tools come from the binary cache).
    '';
  };

  config = {
    system.build.sdImageNative = native.stdenv.mkDerivation {
      name = config.image.fileName;
      nativeBuildInputs =
        with native;
        [
          dosfstools
          e2fsprogs
          libfaketime
          mtools
          util-linux
        ]
        ++ lib.optional cfg.compressImage native.zstd;
      inherit (cfg) compressImage;
      inherit buildCommand;
      passthru = {
        rootFilesystemImage = if ownRootfs then cfg.rootFilesystemImage else nativeRootfs;
        inherit (config.system.build) toplevel;
      };
    };
  };
}
