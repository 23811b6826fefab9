# Test only: what nixos-rebuild would evaluate of agent.nix and server.nix
# with the module in configFile, on node.nix: its toplevel (system.nix),
# which fails on a type error, an unknown option or a failed assertion.
#   nix-instantiate --eval --strict --json nixos-module/test/check.nix --argstr nixpkgsLib <nixpkgs>/lib --argstr configFile <file.nix>
{ nixpkgsLib, configFile }:
(import ./system.nix {
  lib = import nixpkgsLib;
  modules = [ ../agent.nix ../server.nix ./node.nix configFile ];
}).toplevel
