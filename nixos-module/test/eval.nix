# Evaluates nixos-module/*.nix and flake.nix against the stand-in module
# system of stub.nix (no nixpkgs) and returns what the Go test checks:
#   nix-instantiate --eval --strict --json nixos-module/test/eval.nix
let
  stub = import ./stub.nix;
  inherit (stub) lib;

  fakePkgs = {
    slipway = { outPath = "/nix/store/00000000000000000000000000000000-slipway-0.1.0"; };
    coreutils = "/nix/store/11111111111111111111111111111111-coreutils";
  };
  node = {
    networking.hostName = "web-1";
    nix.package = "/nix/store/22222222222222222222222222222222-nix";
    systemd.package = "/nix/store/33333333333333333333333333333333-systemd";
  };
  eval = modules: stub.evalModules { inherit modules; pkgs = fakePkgs; };

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
        extraConfig = { poll_wait = "1m"; report_interval = "2m"; job_timeout = "5m"; };
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

  # What agent/config and server/config would refuse at start, refused at
  # evaluation.
  meshInvalid = eval [
    ../agent.nix
    ../server.nix
    node
    {
      services.slipway.agent = {
        enable = true;
        server = "unix:///run/slipway-server/agent.sock";
        nodeName = "Web_1";
        tailscale = { enable = true; hostname = "web-2"; };
        gossip = { enable = true; keyringFile = "/run/keys/gossip.keyring"; insecureNoEncryption = true; };
      };
      services.slipway.server = {
        enable = true;
        tailscale = { enable = true; stateDir = "/srv/tailscale"; roles."tag:slipway-agent" = "admin"; };
        gossip.enable = true;
      };
    }
  ];

  # Nothing enabled: no unit, no file.
  disabled = eval [ ../agent.nix ../server.nix node ];

  # The flake, with a stand-in nixpkgs: its outputs, and its nixosModules
  # evaluated (the package defaults to the flake's own).
  flake =
    let
      fakeNixpkgs = {
        inherit lib;
        legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: {
          callPackage = f: extra: import f ({
            inherit lib;
            buildGoModule = a: a // { type = "derivation"; outPath = "/nix/store/44444444444444444444444444444444-slipway-flake"; };
          } // extra);
        });
      };
      outputs = (import ../../flake.nix).outputs { self = outputs; nixpkgs = fakeNixpkgs; };
      overlaid = fakeNixpkgs.legacyPackages.x86_64-linux // outputs.overlays.default overlaid { };
      viaModule = stub.evalModules {
        modules = [ outputs.nixosModules.default node { services.slipway.agent = { enable = true; server = "http://s:7420"; }; services.slipway.server.enable = true; } ];
        pkgs = { stdenv.hostPlatform.system = "x86_64-linux"; coreutils = "/c"; };
      };
    in
    {
      package = { inherit (outputs.packages.x86_64-linux.slipway) pname vendorHash subPackages; };
      defaultIsSlipway = outputs.packages.x86_64-linux.default.outPath == outputs.packages.x86_64-linux.slipway.outPath;
      overlay = overlaid.slipway.pname;
      moduleNames = builtins.attrNames outputs.nixosModules;
      agentExecStart = viaModule.config.systemd.services.slipway-agent.serviceConfig.ExecStart;
      serverExecStart = viaModule.config.systemd.services.slipway-server.serviceConfig.ExecStart;
    };

  unit = c: name: {
    inherit (c.systemd.services.${name}) after wantedBy serviceConfig;
    reloadTriggers = c.systemd.services.${name}.reloadTriggers or [ ];
    restartTriggers = c.systemd.services.${name}.restartTriggers or [ ];
    restartIfChanged = c.systemd.services.${name}.restartIfChanged or true;
    path = c.systemd.services.${name}.path or [ ];
  };
  failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) (c.assertions or [ ]));
in
{
  undocumented = full.undocumented;
  full = {
    agentToml = full.config.environment.etc."slipway/agent.toml".text;
    serverToml = full.config.environment.etc."slipway/server.toml".text;
    agentUnit = unit full.config "slipway-agent";
    serverUnit = unit full.config "slipway-server";
    firewall = full.config.networking.firewall.allowedTCPPorts;
    tmpfiles = full.config.systemd.tmpfiles.rules;
    failedAssertions = failed full.config;
  };
  minimal = {
    agentToml = minimal.config.environment.etc."slipway/agent.toml".text;
    serverToml = minimal.config.environment.etc."slipway/server.toml".text;
    failedAssertions = failed minimal.config;
  };
  mesh = {
    agentToml = mesh.config.environment.etc."slipway/agent.toml".text;
    serverToml = mesh.config.environment.etc."slipway/server.toml".text;
    serverUnit = unit mesh.config "slipway-server";
    firewall = { inherit (mesh.config.networking.firewall) allowedTCPPorts allowedUDPPorts; };
    failedAssertions = failed mesh.config;
    reload = unit meshReload.config "slipway-server";
    restart = unit meshRestart.config "slipway-server";
  };
  meshMinimal = {
    agentToml = meshMinimal.config.environment.etc."slipway/agent.toml".text;
    serverToml = meshMinimal.config.environment.etc."slipway/server.toml".text;
    serverUnit = unit meshMinimal.config "slipway-server";
    firewall = meshMinimal.config.networking.firewall or { };
    failedAssertions = failed meshMinimal.config;
  };
  meshInvalid.failedAssertions = failed meshInvalid.config;
  disabled = {
    services = builtins.attrNames (disabled.config.systemd.services or { });
    etc = builtins.attrNames (disabled.config.environment.etc or { });
  };
  inherit flake;
}
