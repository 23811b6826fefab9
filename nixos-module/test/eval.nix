# Evaluates nixos-module/*.nix and flake.nix with nixpkgs' lib (the real
# module system; see system.nix) and returns what test/nixos checks:
#   nix-instantiate --eval --strict --json nixos-module/test/eval.nix --argstr nixpkgsLib <nixpkgs>/lib
# Every configuration here is valid: its toplevel is forced, so a failed
# assertion or a type error fails the evaluation.
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  system = modules: import ./system.nix { inherit lib modules; };
  # Fake store paths, not built: the modules only interpolate them.
  drv = name: hash: { type = "derivation"; inherit name; outPath = "/nix/store/${hash}-${name}"; };

  node = ./node.nix;
  eval = modules: (system modules).toplevel;

  # Every option of both modules set.
  full = eval [
    ../agent.nix
    ../server.nix
    node
    {
      services.slipway.agent = {
        enable = true;
        server = "http://slipway.tailnet.example:7420";
        nodeName = "web-1.prod";
        labels = { role = "web"; "example.com/tier" = "front"; };
        joinTokenFile = "/run/keys/slipway-join";
        tokenFile = "/var/lib/slipway/token";
        stateDir = "/var/lib/slipway";
        unitDir = "/etc/systemd/system.attached";
        linkPrefixes = [ "/etc" "/srv" ];
        keepGenerations = 3;
        secrets = {
          dir = "/run/slipway/secrets";
          identityFile = "/var/lib/slipway/identity.age";
          useSshHostKeys = true;
          sshHostKeys = [ "/etc/ssh/ssh_host_ed25519_key" ];
        };
        logLevel = "debug";
        metricsListen = "127.0.0.1:9500";
        pollWait = "1m";
        reportInterval = "2m";
        jobTimeout = "5m";
        overloadConfirmTimeout = "10m";
      };
      services.slipway.server = {
        enable = true;
        listen = "100.64.0.1:7420";
        agentSocket = "/run/slipway-server/agent.sock";
        stateDir = "/var/lib/slipway-server";
        adminTokens = {
          ci = { role = "deployer"; file = "/run/keys/ci.token"; };
          ops = { role = "admin"; file = "/run/keys/ops.token"; };
        };
        offlineAfter = "5m";
        driftAfter = "4m";
        agentWriteLimit = 200;
        logLevel = "warn";
        metricsListen = "";
        openFirewall = true;
      };
    }
  ];

  # Only what has no default.
  minimal = eval [
    ../agent.nix
    ../server.nix
    node
    {
      services.slipway.agent = { enable = true; server = "unix:///run/slipway-server/agent.sock"; secrets.useSshHostKeys = false; };
      services.slipway.server.enable = true;
    }
  ];

  # The mesh ([tailscale], [gossip]) on both, every option set to something
  # other than its default. The agent's node name is its tailnet host name.
  meshConfig = { roles ? { "alice@example.com" = "admin"; "tag:ci" = "deployer"; }, logLevel ? "info", ciRole ? "deployer", serverJoin ? [ "10.0.0.6:7946" ] }: {
    services.slipway.agent = {
      enable = true;
      server = "http://slipway";
      joinTokenFile = "/run/keys/slipway-join"; # not used over the tailnet, still valid
      tailscale = {
        enable = true;
        hostname = "web-1";
        controlUrl = "https://headscale.example.com";
        authKeyFile = "/run/keys/ts-agent.key";
        stateDir = "/var/lib/slipway-ts";
        tags = [ "tag:slipway-agent" "tag:web" ];
        ephemeral = true;
      };
      gossip = {
        enable = true;
        bind = "0.0.0.0:7947";
        advertise = "10.0.0.7:7947";
        keyringFile = "/run/keys/gossip.keyring";
        join = [ "10.0.0.5:7946" "10.0.0.6:7946" ];
        pollInterval = "2m";
        openFirewall = true;
      };
    };
    services.slipway.server = {
      enable = true;
      adminTokens.ci = { role = ciRole; file = "/run/keys/ci.token"; };
      inherit logLevel;
      tailscale = {
        enable = true;
        hostname = "deploy";
        controlUrl = "https://headscale.example.com";
        authKeyFile = "/run/keys/ts-server.key";
        stateDir = "/var/lib/slipway-tailscale";
        agentTag = "tag:fleet-agent";
        listen = ":8080";
        inherit roles;
      };
      gossip = {
        enable = true;
        bind = "0.0.0.0:7946";
        advertise = "10.0.0.5:7946";
        nodeName = "coordinator";
        keyringFile = "/run/keys/gossip.keyring";
        join = serverJoin;
        openFirewall = true;
      };
    };
  };
  meshWith = args: eval [ ../agent.nix ../server.nix node (meshConfig args) ];
  mesh = meshWith { };
  # What a reload applies (roles, log level, a token's role) changed …
  meshReload = meshWith { roles = { "alice@example.com" = "viewer"; }; logLevel = "debug"; ciRole = "admin"; };
  # … and what needs a restart.
  meshRestart = meshWith { serverJoin = [ "10.0.0.7:7946" ]; };

  # Only enable (and the gossip keys, which have no default).
  meshMinimal = eval [
    ../agent.nix
    ../server.nix
    node
    {
      services.slipway.agent = { enable = true; server = "http://slipway"; tailscale.enable = true; gossip = { enable = true; insecureNoEncryption = true; }; };
      services.slipway.server = { enable = true; tailscale.enable = true; gossip = { enable = true; keyringFile = "/run/keys/gossip.keyring"; }; };
    }
  ];

  # The agent on the host's tailscaled (tailscale.mode = "host"): through
  # its SOCKS5 proxy at a socket of its own, and with the defaults.
  meshHost = eval [
    ../agent.nix
    ../server.nix
    node
    {
      services.slipway.agent = {
        enable = true;
        server = "http://slipway";
        tailscale = { enable = true; mode = "host"; socket = "/run/tailscale/tailscaled.sock"; proxy = "socks5://127.0.0.1:1055"; tags = [ "tag:slipway-agent" "tag:web" ]; };
      };
      services.slipway.server = {
        enable = true;
        tailscale = { enable = true; mode = "host"; socket = "/run/tailscale/tailscaled.sock"; listen = ":7420"; roles."alice@example.com" = "admin"; };
        gossip = { enable = true; insecureNoEncryption = true; };
      };
    }
  ];
  meshHostMinimal = eval [
    ../agent.nix
    node
    {
      services.slipway.agent = { enable = true; server = "http://slipway"; tailscale = { enable = true; mode = "host"; }; gossip = { enable = true; insecureNoEncryption = true; }; };
    }
  ];

  # Several servers on one etcd store: the agent lists them, the server
  # has every [store] option set.
  etcd = eval [
    ../agent.nix
    ../server.nix
    node
    {
      services.slipway.agent = { enable = true; server = [ "http://slipway-a:7420" "https://slipway-b.example:7420" "http://[fd7a:115c::5]:7420" ]; };
      services.slipway.server = {
        enable = true;
        store = {
          kind = "etcd";
          endpoints = [ "https://10.0.0.1:2379" "https://10.0.0.2:2379" "http://etcd-3:2379" ];
          prefix = "/fleet/prod/";
          caFile = "/etc/slipway/etcd-ca.pem";
          certFile = "/etc/slipway/etcd-client.pem";
          keyFile = "/run/keys/etcd-client.key";
          username = "slipway";
          passwordFile = "/run/keys/etcd-password";
          dialTimeout = "3s";
          requestTimeout = "20s";
          leaseTtl = "15s";
        };
      };
    }
  ];
  # etcd with only what has no default.
  etcdMinimal = eval [
    ../server.nix
    node
    { services.slipway.server = { enable = true; store = { kind = "etcd"; endpoints = [ "http://127.0.0.1:2379" ]; }; }; }
  ];

  # Nothing enabled: no unit, no file.
  disabled = eval [ ../agent.nix ../server.nix node ];

  # The flake, with a stand-in nixpkgs: its outputs, and its nixosModules
  # evaluated (the package defaults to the flake's own).
  flake =
    let
      fakeNixpkgs = {
        inherit lib;
        legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: {
          callPackage = f: extra: import f ({
            inherit lib;
            buildGoModule = a: a // { type = "derivation"; outPath = "/nix/store/44444444444444444444444444444444-slipway-flake"; };
          } // extra);
        });
      };
      outputs = (import ../../flake.nix).outputs { self = outputs; nixpkgs = fakeNixpkgs; };
      overlaid = fakeNixpkgs.legacyPackages.x86_64-linux // outputs.overlays.default overlaid { };
      viaModule = (import ./system.nix {
        inherit lib;
        modules = [ outputs.nixosModules.default node { services.slipway.agent = { enable = true; server = "http://s:7420"; }; services.slipway.server.enable = true; } ];
        pkgs = { stdenv.hostPlatform.system = "x86_64-linux"; coreutils = drv "coreutils" "11111111111111111111111111111111"; };
      }).toplevel;
    in
    {
      package = { inherit (outputs.packages.x86_64-linux.slipway) pname vendorHash subPackages; };
      defaultIsSlipway = outputs.packages.x86_64-linux.default.outPath == outputs.packages.x86_64-linux.slipway.outPath;
      overlay = overlaid.slipway.pname;
      moduleNames = builtins.attrNames outputs.nixosModules;
      agentExecStart = viaModule.services.slipway-agent.serviceConfig.ExecStart;
      serverExecStart = viaModule.services.slipway-server.serviceConfig.ExecStart;
    };

  files = t: {
    agentToml = t.etc."slipway/agent.toml";
    serverToml = t.etc."slipway/server.toml";
    inherit (t) warnings;
  };
in
{
  full = files full // {
    agentUnit = full.services.slipway-agent;
    serverUnit = full.services.slipway-server;
    inherit (full) firewall tmpfiles;
  };
  minimal = files minimal;
  mesh = files mesh // {
    serverUnit = mesh.services.slipway-server;
    inherit (mesh) firewall;
    reload = meshReload.services.slipway-server;
    restart = meshRestart.services.slipway-server;
  };
  meshHost = {
    agentToml = meshHost.etc."slipway/agent.toml";
    agentUnit = meshHost.services.slipway-agent;
    serverToml = meshHost.etc."slipway/server.toml";
    serverUnit = meshHost.services.slipway-server;
    inherit (meshHost) warnings;
  };
  meshHostMinimal = {
    agentToml = meshHostMinimal.etc."slipway/agent.toml";
    agentUnit = meshHostMinimal.services.slipway-agent;
    inherit (meshHostMinimal) warnings;
  };
  meshMinimal = files meshMinimal // {
    serverUnit = meshMinimal.services.slipway-server;
    inherit (meshMinimal) firewall;
  };
  etcd = files etcd // { serverUnit = etcd.services.slipway-server; };
  etcdMinimal = {
    serverToml = etcdMinimal.etc."slipway/server.toml";
    serverUnit = etcdMinimal.services.slipway-server;
  };
  disabled = {
    services = builtins.attrNames disabled.services;
    etc = builtins.attrNames disabled.etc;
    inherit (disabled) firewall packages;
  };
  inherit flake;
}
