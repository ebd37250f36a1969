# The FIRMWARE partition's files as one directory: exactly what the image's
# FAT partition holds and what the firmware sync on deploy writes. Every
# card carries the boot files of every fleet model (Pi 3, Zero 2 W, Pi 4),
# so a card boots in any of them. Names and sources as nixpkgs'
# sd-image-aarch64.nix has them (documentation/boot.md cites each).
{
  runCommand,
  raspberrypifw,
  ubootRaspberryPi3_64bit,
  ubootRaspberryPi4_64bit,
  raspberrypi-armstubs,
  configTxt,
  # Names of the device-tree overlays config.txt loads (`dtoverlay=`): the
  # firmware reads them from overlays/<name>.dtbo on this partition.
  overlays ? [ ],
}:
let
  boot = "${raspberrypifw}/share/raspberrypi/boot";
  version = p: p.version or "unknown";
  copyOverlays = builtins.concatStringsSep "\n" (
    [ "mkdir -p $out/overlays" ]
    ++ map (name: ''
      need ${boot}/overlays/${name}.dtbo
      cp ${boot}/overlays/${name}.dtbo $out/overlays/
    '') overlays
  );
in
runCommand "pi-firmware"
  {
    # One `key=value` line per component: `cargo xtask status` reads it from
    # the partition to tell which firmware and bootloader a Pi boots.
    versions = ''
      raspberrypifw=${version raspberrypifw}
      ubootRaspberryPi3_64bit=${version ubootRaspberryPi3_64bit}
      ubootRaspberryPi4_64bit=${version ubootRaspberryPi4_64bit}
      raspberrypi-armstubs=${version raspberrypi-armstubs}
    '';
  }
  ''
    set -eu
    need() {
      for f in "$@"; do
        if [ ! -e "$f" ]; then
          echo "pi-firmware: $f is missing: the pinned nixpkgs no longer ships it; keep this host on profile = \"generic\" (documentation/boot.md) until modules/hardware/pi-firmware.nix is updated" >&2
          exit 1
        fi
      done
    }
    need ${boot}/bootcode.bin ${boot}/start.elf ${boot}/fixup.dat ${boot}/start4.elf ${boot}/fixup4.dat \
      ${boot}/bcm2711-rpi-4-b.dtb ${boot}/bcm2711-rpi-400.dtb \
      ${ubootRaspberryPi3_64bit}/u-boot.bin ${ubootRaspberryPi4_64bit}/u-boot.bin \
      ${raspberrypi-armstubs}/armstub8-gic.bin ${configTxt}
    mkdir -p $out

    # The GPU firmware: bootcode.bin (read from the card by the Pi 3 and
    # Zero 2 W; the Pi 4 boots from its EEPROM), start.elf / start4.elf
    # with their fixup files (Pi 3 and Zero 2 W / Pi 4), and the cut-down
    # start_cd / start4cd the firmware picks for `gpu_mem=16`. Not the
    # camera (start_x) and debug (start_db) variants: with them a firmware
    # release no longer fits twice on the 30 MiB partition, which the
    # firmware sync on deploy needs; config.txt's `start_x`,
    # `start_debug`, `start_file` and `fixup_file` are refused
    # (lib/config-txt.nix).
    need ${boot}/start_cd.elf ${boot}/fixup_cd.dat ${boot}/start4cd.elf ${boot}/fixup4cd.dat
    for f in start.elf fixup.dat start_cd.elf fixup_cd.dat start4.elf fixup4.dat start4cd.elf fixup4cd.dat; do
      cp ${boot}/$f $out/
    done
    cp ${boot}/bootcode.bin $out/

    # Pi 4 / 400: the firmware loads the device tree named after the board
    # and hands it to U-Boot. The Pi 3 and Zero 2 W get none here: their
    # U-Boot uses its own built-in tree, as on nixpkgs' image.
    cp ${boot}/bcm2711-rpi-4-b.dtb ${boot}/bcm2711-rpi-400.dtb $out/

    # U-Boot, named as config.txt's `kernel=` lines name it, and the Pi 4's
    # armstub (config.txt's `armstub=`).
    cp ${ubootRaspberryPi3_64bit}/u-boot.bin $out/u-boot-rpi3.bin
    cp ${ubootRaspberryPi4_64bit}/u-boot.bin $out/u-boot-rpi4.bin
    cp ${raspberrypi-armstubs}/armstub8-gic.bin $out/armstub8-gic.bin

    # The overlays config.txt names (none unless a host asks).
    ${if overlays == [ ] then "" else copyOverlays}
    cp ${configTxt} $out/config.txt
    printf '%s' "$versions" > $out/pi-nixos-firmware.txt
  ''
