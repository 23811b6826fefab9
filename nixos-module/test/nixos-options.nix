# Test only: the NixOS options agent.nix and server.nix set, declared with
# the types NixOS gives them, so that nixpkgs' lib (the real module system)
# checks the modules' definitions as a NixOS system would, without NixOS.
# Only the options the modules set (or read) are here; a NixOS system
# declares them itself.
{ lib, ... }:

let
  inherit (lib) mkOption types;

  # A setting of a unit's [Unit] or [Service] section, as NixOS types it:
  # list definitions (repeatable settings) concatenate, a mix of lists and
  # other values is an error, other values must all be equal.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs; in
      if builtins.isList (builtins.head defs').value then
        lib.concatMap
          (d: if builtins.isList d.value then d.value
          else throw "The definitions for systemd unit options should be either all lists or all non-lists, but for ${lib.showOption loc} they are a mix")
          defs'
      else lib.mergeEqualOption loc defs';
  };

  unitNames = mkOption { type = types.listOf types.str; default = [ ]; };

  # NixOS checks the values of Type= and Restart= in serviceConfig.
  serviceConfigType = types.addCheck (types.attrsOf unitOption) (c:
    builtins.elem (c.Type or "simple") [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle" ]
    && builtins.elem (c.Restart or "no") [ "no" "on-success" "on-failure" "on-abnormal" "on-watchdog" "on-abort" "always" ]);

  service = {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.singleLineStr; default = ""; };
      documentation = mkOption { type = types.listOf types.str; default = [ ]; };
      wantedBy = unitNames;
      requiredBy = unitNames;
      wants = unitNames;
      requires = unitNames;
      after = unitNames;
      before = unitNames;
      restartIfChanged = mkOption { type = types.bool; default = true; };
      stopIfChanged = mkOption { type = types.bool; default = true; };
      reloadIfChanged = mkOption { type = types.bool; default = false; };
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      reloadTriggers = mkOption { type = types.listOf unitOption; default = [ ]; };
      path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
      environment = mkOption { type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ])); default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      serviceConfig = mkOption { type = serviceConfigType; default = { }; };
    };
  };

  etcFile = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      target = mkOption { type = types.str; default = name; };
      text = mkOption { type = types.nullOr types.lines; default = null; };
      mode = mkOption { type = types.str; default = "symlink"; };
      user = mkOption { type = types.str; default = "+0"; };
      group = mkOption { type = types.str; default = "+0"; };
    };
  };

  package = mkOption { type = types.package; };
in
{
  options = {
    assertions = mkOption { type = types.listOf types.unspecified; internal = true; default = [ ]; };
    warnings = mkOption { type = types.listOf types.str; internal = true; default = [ ]; };

    networking.hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
    networking.firewall.allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };

    environment.etc = mkOption { type = types.attrsOf (types.submodule etcFile); default = { }; };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };

    systemd.package = package;
    systemd.services = mkOption { type = types.attrsOf (types.submodule service); default = { }; };
    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };

    nix.package = package;
  };
}
