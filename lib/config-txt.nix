# config.txt for every Pi, computed with builtins only (no nixpkgs), so that
# `nix eval --raw .#configTxt.<host>` works offline and the NixOS module
# (modules/hardware/config-txt.nix) writes exactly this text.
#
# The text is today's config.txt (nixpkgs'
# nixos/modules/installer/sd-card/sd-image-aarch64.nix, byte for byte, less
# its [cm4] section: no fleet model is a Compute Module) plus what
# hosts/<name>/config-txt.toml adds. Every card keeps every fleet model's
# section, as today, so a card still starts U-Boot on any fleet model. The facts both this file and
# `cargo xtask check` judge it by are in lib/config-txt.toml; `problems` are
# the same rules check applies (check adds the line numbers).
{ root }:
let
  facts = builtins.fromTOML (builtins.readFile (root + "/lib/config-txt.toml"));

  # nixpkgs' sd-image-aarch64.nix config.txt, one block per section; the
  # lines of a block end before the blank line that separates it from the
  # next. [cm4] is left out: no fleet model reads it.
  block = header: lines: { inherit header lines; };
  defaults = {
    pi3 = [ (block "pi3" [ "kernel=u-boot-rpi3.bin" ]) ];
    zero2w = [ (block "pi02" [ "kernel=u-boot-rpi3.bin" ]) ];
    pi4 = [
      (block "pi4" [
        "kernel=u-boot-rpi4.bin"
        "enable_gic=1"
        "armstub=armstub8-gic.bin"
        ""
        "# Otherwise the resolution will be weird in most cases, compared to"
        "# what the pi3 firmware does by default."
        "disable_overscan=1"
        ""
        "# Supported in newer board revisions"
        "arm_boost=1"
      ])
    ];
  };
  allBlock = block "all" [
    "# Boot in 64-bit mode."
    "arm_64bit=1"
    ""
    "# U-Boot needs this to work, regardless of whether UART is actually used or not."
    "# Look in arch/arm/mach-bcm283x/Kconfig in the U-Boot tree to see if this is still"
    "# a requirement in the future."
    "enable_uart=1"
    ""
    "# Prevent the firmware from smashing the framebuffer setup done by the mainline kernel"
    "# when attempting to show low-voltage or overtemperature warnings."
    "avoid_warnings=1"
  ];

  # Sections a host file may have, in the order they are written.
  order = [
    "pi3"
    "pi3+"
    "pi02"
    "pi0"
    "pi4"
    "pi400"
    "all"
  ];
  typed = [
    "enable_uart"
    "arm_boost"
    "gpu_mem"
    "dtparam"
    "dtoverlay"
  ];
  # Lines the boot chain itself needs: never from a host file.
  bootChain = [
    "kernel"
    "armstub"
    "arm_64bit"
    "enable_gic"
    # GPU firmware variants the FIRMWARE partition does not carry
    # (modules/hardware/pi-firmware.nix): the firmware would not start.
    "start_x"
    "start_debug"
    "start_file"
    "fixup_file"
  ];
  sectionKeys = typed ++ [ "lines" ];

  bool = b: if b == true then "1" else "0";
  keyOf =
    line:
    let
      m = builtins.match "[[:space:]]*([^=[:space:]]+)[[:space:]]*=.*" line;
    in
    if m == null then null else builtins.head m;
  overlayName = entry: builtins.head (builtins.split "," entry);
  listOf = v: if builtins.isList v then v else [ ];

  forHost =
    host:
    let
      rel = "hosts/${host.name}/config-txt.toml";
      path = root + "/${rel}";
      file = if builtins.pathExists path then builtins.fromTOML (builtins.readFile path) else { };
      deviceTree = file.device_tree or "kernel";
      sections = builtins.removeAttrs file [ "device_tree" ];
      names = builtins.attrNames sections;
      mine = builtins.filter (
        s: builtins.hasAttr s facts.sections && builtins.elem host.model facts.sections.${s}
      ) names;
      # A section's settings, only when it applies to this host (else it is
      # a problem, and adds nothing).
      settings =
        s:
        if builtins.elem s mine && builtins.isAttrs (sections.${s} or null) then sections.${s} else { };

      # One typed value as its config.txt line(s).
      render =
        k: v:
        if k == "enable_uart" || k == "arm_boost" then
          [ "${k}=${bool v}" ]
        else if k == "gpu_mem" then
          [ "gpu_mem=${toString v}" ]
        else
          map (e: "${k}=${e}") (listOf v);

      # A default block with the host's typed values put in place of the
      # block's own lines, the rest of the host's section after them.
      merged =
        b:
        let
          add = settings b.header;
          replaced = map (
            l:
            let
              k = keyOf l;
            in
            if k != null && builtins.elem k typed && add ? ${k} then
              builtins.head (render k add.${k})
            else
              l
          ) b.lines;
          inBlock = builtins.filter (k: k != null) (map keyOf b.lines);
          extra =
            builtins.concatMap (
              k: if add ? ${k} && !(builtins.elem k inBlock) then render k add.${k} else [ ]
            ) typed
            ++ listOf (add.lines or [ ]);
        in
        {
          inherit (b) header;
          lines = replaced ++ (if extra == [ ] then [ ] else [ "# from ${rel}" ] ++ extra);
        };

      modelBlocks = defaults.pi3 ++ defaults.zero2w ++ defaults.pi4;
      defaultHeaders = map (b: b.header) modelBlocks;
      hostOnly = builtins.filter (
        s: builtins.elem s mine && s != "all" && !(builtins.elem s defaultHeaders)
      ) order;
      blocks =
        map merged modelBlocks
        ++ map (s: merged (block s [ ])) hostOnly
        ++ [ (merged allBlock) ];
      showBlock = b: "[${b.header}]\n" + builtins.concatStringsSep "\n" b.lines + "\n";

      # The rules `cargo xtask check` applies, as messages (check adds the line).
      sectionProblems =
        s:
        if !(builtins.hasAttr s facts.sections) then
          [
            {
              message = "[${s}] is not a model filter of config.txt";
              fix = "use one of [${builtins.concatStringsSep "], [" order}]";
            }
          ]
        else if facts.sections.${s} == [ ] then
          [
            {
              message = "[${s}] applies to no model of this fleet (pi3, pi4, zero2w)";
              fix = "remove the section or move its settings to [all]";
            }
          ]
        else if !(builtins.elem host.model facts.sections.${s}) then
          [
            {
              message = "[${s}] never applies to ${host.name}, a ${host.model}";
              fix = "move its settings to [all] or to a section of the ${host.model}";
            }
          ]
        else if !(builtins.isAttrs sections.${s}) then
          [ {
            message = "[${s}] must be a table";
            fix = "write `[${s}]` followed by its settings";
          } ]
        else
          builtins.concatMap (k: settingProblems s k sections.${s}.${k}) (
            builtins.attrNames sections.${s}
          );

      settingProblems =
        s: k: v:
        if !(builtins.elem k sectionKeys) then
          [
            {
              message = "[${s}] `${k}` is not a setting this file types";
              fix = "put it in `lines = [\"${k}=...\"]`, or use one of ${builtins.concatStringsSep ", " sectionKeys}";
            }
          ]
        else if (k == "enable_uart" || k == "arm_boost") && !builtins.isBool v then
          [ {
            message = "[${s}] `${k}` must be true or false";
            fix = "write `${k} = true` or `${k} = false`";
          } ]
        else if k == "gpu_mem" && !builtins.isInt v then
          [ {
            message = "[${s}] `gpu_mem` must be a number of megabytes";
            fix = "write e.g. `gpu_mem = 16`";
          } ]
        else if
          (k == "dtoverlay" || k == "dtparam" || k == "lines")
          && !(builtins.isList v && builtins.all builtins.isString v)
        then
          [ {
            message = "[${s}] `${k}` must be a list of strings";
            fix = "write e.g. `${k} = [\"...\"]`";
          } ]
        else if k == "enable_uart" && !v then
          [
            {
              message = "[${s}] `enable_uart = false` stops U-Boot: it needs enable_uart=1 (nixpkgs' sd-image-aarch64.nix)";
              fix = "remove `enable_uart = false`";
            }
          ]
        else if k == "arm_boost" && !(builtins.elem host.model facts.arm_boost.models) then
          [
            {
              message = "[${s}] `arm_boost` is a Raspberry Pi 4 setting and ${host.name} is a ${host.model}";
              fix = "remove it";
            }
          ]
        else if
          k == "gpu_mem" && (v < facts.gpu_mem.min || v > facts.gpu_mem.max.${host.model})
        then
          [
            {
              message = "[${s}] `gpu_mem = ${toString v}` is outside ${toString facts.gpu_mem.min}..${toString facts.gpu_mem.max.${host.model}}, the range for a ${host.model}";
              fix = "set gpu_mem between ${toString facts.gpu_mem.min} and ${toString facts.gpu_mem.max.${host.model}}";
            }
          ]
        else if k == "dtoverlay" then
          builtins.concatMap (
            e:
            if builtins.elem (overlayName e) facts.overlays.names then
              [ ]
            else
              [
                {
                  message = "[${s}] overlay `${overlayName e}` is not one the firmware ships";
                  fix = "check the name against lib/config-txt.toml's list (overlays/<name>.dtbo)";
                }
              ]
          ) v
          ++ reachProblems s k
        else if k == "dtparam" then
          reachProblems s k
        else if k == "lines" then
          builtins.concatMap (lineProblems s) v
        else
          [ ];

      reachProblems =
        s: k:
        if deviceTree == "firmware" then
          [ ]
        else
          [
            {
              message = "[${s}] `${k}` would not reach Linux: U-Boot boots the kernel's own device tree (extlinux FDTDIR), not the firmware's";
              fix = "set `device_tree = \"firmware\"` (Pi 4 only), or use hardware.deviceTree.overlays in hosts/${host.name}/default.nix";
            }
          ];

      lineProblems =
        s: l:
        let
          k = keyOf l;
        in
        if builtins.match "[[:space:]]*\\[.*" l != null then
          [ {
            message = "[${s}] the line `${l}` starts a section";
            fix = "make it a table of its own: `${l}`";
          } ]
        else if k != null && builtins.elem k typed then
          [ {
            message = "[${s}] the line `${l}` sets `${k}`, which is typed";
            fix = "write `${k} = ...` in [${s}] instead";
          } ]
        else if k != null && builtins.elem k bootChain then
          [
            {
              message = "[${s}] the line `${l}` changes the boot chain (`${k}`)";
              fix = "remove it: the model's defaults set it";
            }
          ]
        else
          [ ];

      fileProblems =
        (
          if
            builtins.elem deviceTree [
              "kernel"
              "firmware"
            ]
          then
            [ ]
          else
            [ {
              message = "`device_tree = \"${toString deviceTree}\"` is neither \"kernel\" nor \"firmware\"";
              fix = "write `device_tree = \"kernel\"` or remove it";
            } ]
        )
        ++ (
          if deviceTree == "firmware" && host.model != "pi4" then
            [
              {
                message = "`device_tree = \"firmware\"` needs a Pi 4: the FIRMWARE partition holds only bcm2711 device trees";
                fix = "remove it";
              }
            ]
          else
            [ ]
        );
    in
    {
      # The file, exactly as the firmware reads it.
      text = builtins.concatStringsSep "\n" (map showBlock blocks);
      # Overlay names config.txt loads (overlays/<name>.dtbo on FIRMWARE).
      overlays = map overlayName (
        builtins.concatMap (s: listOf ((settings s).dtoverlay or [ ])) mine
      );
      inherit deviceTree;
      file = rel;
      problems = fileProblems ++ builtins.concatMap sectionProblems names;
    };
in
{
  inherit forHost facts;
}
