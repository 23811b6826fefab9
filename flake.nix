{
  description = "Slipway: pull-based deployment for fleets of systemd machines, NixOS first among them";

  # go.mod needs Go 1.26: a nixpkgs whose buildGoModule has it (unstable).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The modules, with the package defaulting to this flake's own build
      # (no overlay needed; pkgs.slipway from the overlay works too).
      withPackage = name: file: { lib, pkgs, ... }: {
        imports = [ file ];
        services.slipway.${name}.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.slipway;
      };
    in
    {
      packages = forAllSystems (pkgs: rec {
        slipway = pkgs.callPackage ./nixos-module/package.nix { };
        default = slipway;
      });

      overlays.default = final: prev: {
        slipway = final.callPackage ./nixos-module/package.nix { };
      };

      nixosModules = {
        agent = withPackage "agent" ./nixos-module/agent.nix;
        server = withPackage "server" ./nixos-module/server.nix;
        default = { imports = [ self.nixosModules.agent self.nixosModules.server ]; };
      };
    };
}
