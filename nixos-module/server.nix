# services.slipway.server: slipway-server, the coordinator of a Slipway
# fleet, in a hardened unit: a dynamic user, only its state and runtime
# directories writable, no capabilities.
#
# Admin tokens are given as files (never as Nix strings: those would land in
# the world-readable Nix store). systemd hands each file to the dynamic user
# as a credential (LoadCredential), so the files may stay root-only (0600);
# the generated server.toml names the credential copies. systemd copies
# credentials when the unit starts: a changed token file takes effect at a
# restart; `systemctl reload slipway-server` (SIGHUP; nixos-rebuild does it
# when server.toml changes) applies log_level and the set of tokens.
#
# The generated /etc/slipway/server.toml uses exactly the keys of
# server/config (unknown keys are errors there).
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression mapAttrsToList hasPrefix removePrefix;
  cfg = config.services.slipway.server;
  toml = import ./toml.nix;
  credDir = "/run/credentials/slipway-server.service";

  settings = {
    listen = cfg.listen;
    agent_socket = cfg.agentSocket;
    state_dir = cfg.stateDir;
    offline_after = cfg.offlineAfter;
    drift_after = cfg.driftAfter;
    log_level = cfg.logLevel;
    metrics_listen = cfg.metricsListen;
    admin_token = mapAttrsToList
      (name: t: {
        inherit name;
        inherit (t) role;
        file = "${credDir}/admin-token-${name}";
      })
      cfg.adminTokens;
  } // cfg.extraConfig;
in
{
  options.services.slipway.server = {
    enable = mkEnableOption "slipway-server, the coordinator of a Slipway fleet";

    package = mkOption {
      type = types.package;
      default = pkgs.slipway;
      defaultText = literalExpression "pkgs.slipway";
      description = "The Slipway package; its bin/slipway-server is run. The flake's nixosModules set it to the flake's own package.";
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:7420";
      example = "100.64.0.1:7420";
      description = ''
        host:port of the API (admins and agents). Loopback by default: expose
        it on the tailnet address, not on a public interface. Ports below 1024
        are not possible (the unit has no capabilities).
      '';
    };

    agentSocket = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/slipway-server/agent.sock";
      description = "A unix socket for agents on this machine (or containers it is bind-mounted into); it must be under /run/slipway-server, the only runtime directory the unit can write. null: none.";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/slipway-server";
      description = "The server's state (bbolt store, blobs). Must be under /var/lib: it is the unit's StateDirectory, owned by the dynamic user.";
    };

    adminTokens = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          role = mkOption {
            type = types.enum [ "viewer" "deployer" "admin" ];
            description = "What the token may do: viewer (read), deployer (read, deploy), admin (everything).";
          };
          file = mkOption {
            type = types.str;
            example = "/run/keys/slipway-ci.token";
            description = "A file holding the token (root-only is fine: it is passed as a systemd credential). Never a store path.";
          };
        };
      });
      default = { };
      example = literalExpression ''{ ci = { role = "deployer"; file = "/run/keys/slipway-ci.token"; }; }'';
      description = "Admin bearer tokens, by name (1 to 63 of [A-Za-z0-9._-]).";
    };

    offlineAfter = mkOption {
      type = types.str;
      default = "3m";
      description = "A node not heard from for this long is offline (a Go duration).";
    };

    driftAfter = mkOption {
      type = types.str;
      default = "2m";
      description = "A node that has not reached its desired generation for this long is drifting (a Go duration).";
    };

    logLevel = mkOption {
      type = types.enum [ "debug" "info" "warn" "error" ];
      default = "info";
      description = "The server's log level (a reload, SIGHUP, re-reads it).";
    };

    metricsListen = mkOption {
      type = types.str;
      default = "127.0.0.1:9431";
      description = "host:port of the Prometheus endpoint (/metrics, no authentication; an address of its own); \"\" disables it.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the API's port in the firewall (only useful when listen is not loopback).";
    };

    extraConfig = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.bool (types.listOf types.str) ]);
      default = { };
      description = "More keys of /etc/slipway/server.toml, over the ones above. They must be keys the server knows: it refuses to start on an unknown key.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = hasPrefix "/var/lib/" cfg.stateDir;
        message = "services.slipway.server.stateDir must be under /var/lib (it is the unit's StateDirectory)";
      }
      {
        assertion = cfg.agentSocket == null || hasPrefix "/run/slipway-server/" cfg.agentSocket;
        message = "services.slipway.server.agentSocket must be under /run/slipway-server";
      }
    ];

    environment.etc."slipway/server.toml".text = toml.toTOML settings;

    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ (lib.toInt (lib.last (lib.splitString ":" cfg.listen))) ];

    systemd.services.slipway-server = {
      description = "Slipway server: the coordinator of a Slipway fleet";
      documentation = [ "https://github.com/slipway-dev/slipway" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      reloadTriggers = [ config.environment.etc."slipway/server.toml".text ];
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${cfg.package}/bin/slipway-server --config /etc/slipway/server.toml --log-format json";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = "5s";
        WatchdogSec = "30s";
        TimeoutStopSec = "30s";
        LimitNOFILE = 65536;
        LoadCredential = mapAttrsToList (name: t: "admin-token-${name}:${t.file}") cfg.adminTokens;

        DynamicUser = true;
        StateDirectory = removePrefix "/var/lib/" cfg.stateDir;
        StateDirectoryMode = "0700";
        RuntimeDirectory = "slipway-server";
        RuntimeDirectoryMode = "0755";
        UMask = "0077";

        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        PrivateUsers = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RemoveIPC = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        KeyringMode = "private";
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
