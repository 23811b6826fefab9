# The Slipway package: slipway-agent, slipway-server and the slipway CLI.
# go.mod asks for Go 1.26: pass a buildGoModule whose Go is at least that
# (e.g. buildGo126Module) if your nixpkgs' default Go is older.
{ lib, buildGoModule }:

buildGoModule {
  pname = "slipway";
  version = "0.1.0";

  src = lib.cleanSourceWith {
    src = ./..;
    filter = path: type:
      let base = baseNameOf path; in
      !(type == "directory" && (base == ".git" || base == "bin" || base == "dist" || base == "test" || base == "nixos-module"))
      && !(lib.hasSuffix ".nix" base);
  };

  # The NAR hash of the vendor/ directory `go mod vendor` makes (see
  # nixos-module/README.md for how it was computed without nixpkgs). Update
  # it whenever go.mod/go.sum change.
  vendorHash = "sha256-Eudrkgnax19tEYiKW+OWr3aYjkxp9Hxnu8fp6GXd/ck=";

  subPackages = [ "agent/cmd/slipway-agent" "server/cmd/slipway-server" "operator/cmd/slipway" ];

  env.CGO_ENABLED = "0";
  ldflags = [ "-s" "-w" ];

  # The unit and integration tests need systemd, nix-bin and a network; CI
  # runs them (.ci/run), not the Nix build sandbox.
  doCheck = false;

  meta = {
    description = "Pull-based deployment for fleets of systemd machines, NixOS first among them";
    homepage = "https://github.com/slipway-dev/slipway";
    mainProgram = "slipway";
    platforms = lib.platforms.linux;
  };
}
