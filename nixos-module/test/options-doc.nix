# The options of agent.nix and server.nix as nixpkgs' lib documents them
# (lib.optionAttrSetToDocList): test/nixos renders them into
# docs/nixos-options.md and checks that file is current.
#   nix-instantiate --eval --strict --json nixos-module/test/options-doc.nix --argstr nixpkgsLib <nixpkgs>/lib
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  inherit (import ./system.nix { inherit lib; modules = [ ../agent.nix ../server.nix ]; }) options;
in
map
  (o: {
    inherit (o) name description type declarations;
    default = o.default.text or null;
    example = o.example.text or null;
  })
  (lib.filter (o: o.visible && !o.internal) (lib.optionAttrSetToDocList options.services.slipway))
