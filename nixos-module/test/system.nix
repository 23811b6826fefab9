# Test only: evaluates NixOS modules with nixpkgs' lib (the real module
# system) over the NixOS options of nixos-options.nix, and checks them as
# NixOS' system.build.toplevel does: a failed assertion throws "Failed
# assertions: - …", warnings are printed ("evaluation warning: …").
#
#   system { lib; modules; pkgs ? null (fake slipway and coreutils); }
#     .config    the evaluated configuration
#     .options   the option declarations
#     .toplevel  what a system build forces (the files, units and firewall
#                ports these modules make), after the assertions and warnings
{ lib, modules, pkgs ? null }:

let
  # Fake store paths, not built: the modules only interpolate them.
  drv = name: hash: { type = "derivation"; inherit name; outPath = "/nix/store/${hash}-${name}"; };
  fakePkgs = {
    slipway = drv "slipway-0.1.0" "00000000000000000000000000000000";
    coreutils = drv "coreutils" "11111111111111111111111111111111";
  };

  eval = lib.evalModules {
    modules = [ ./nixos-options.nix ] ++ modules;
    specialArgs.pkgs = if pkgs == null then fakePkgs else pkgs;
  };
  c = eval.config;

  unit = u: {
    inherit (u) description documentation wantedBy wants after restartIfChanged stopIfChanged reloadTriggers unitConfig serviceConfig;
    restartTriggers = map toString u.restartTriggers;
    path = map toString u.path;
  };
in
{
  inherit (eval) config options;
  toplevel = lib.asserts.checkAssertWarn c.assertions c.warnings {
    etc = lib.mapAttrs (_: f: f.text) (lib.filterAttrs (_: f: f.enable) c.environment.etc);
    services = lib.mapAttrs (_: unit) c.systemd.services;
    packages = map toString c.environment.systemPackages;
    firewall = { inherit (c.networking.firewall) allowedTCPPorts allowedUDPPorts; };
    tmpfiles = c.systemd.tmpfiles.rules;
    inherit (c) warnings;
  };
}
