# Test only: the host the modules are evaluated on (a NixOS node named
# web-1), with fake store paths for the packages the units name.
let
  drv = name: hash: { type = "derivation"; inherit name; outPath = "/nix/store/${hash}-${name}"; };
in
{
  networking.hostName = "web-1";
  nix.package = drv "nix" "22222222222222222222222222222222";
  systemd.package = drv "systemd" "33333333333333333333333333333333";
}
