# services.slipway.agent: the Slipway agent on a NixOS node.
#
# The agent pulls this node's desired generation from slipway-server and
# switches to it. On NixOS a generation is normally a prebuilt system closure
# (a release whose manifest has `nixos`, built by CI and pushed to a binary
# cache): the agent realises it from the release's substituters, checking
# signatures, sets the system profile and runs switch-to-configuration. The
# node never evaluates Nix.
#
# The confirm timeout (how long a switched node waits for the server's
# confirm before it reverts by itself, "magic rollback") is a property of
# each release (`confirm_timeout` in its slipway.toml, default 30s), not of
# the node: there is deliberately no option for it here.
#
# The unit has restartIfChanged = false: the agent is what runs
# switch-to-configuration, and a switch must not stop or restart the process
# that is switching (it would kill its own switcher half-way). A new agent
# package takes effect at the next agent restart or boot.
#
# The generated /etc/slipway/agent.toml uses exactly the keys of
# agent/config (unknown keys are errors there).
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  cfg = config.services.slipway.agent;
  toml = import ./toml.nix;

  settings = {
    server = cfg.server;
    node_name = cfg.nodeName;
    labels = cfg.labels;
    join_token_file = cfg.joinTokenFile;
    token_file = cfg.tokenFile;
    state_dir = cfg.stateDir;
    unit_dir = cfg.unitDir;
    link_prefixes = cfg.linkPrefixes;
    keep_generations = cfg.keepGenerations;
    log_level = cfg.logLevel;
    secrets_dir = cfg.secrets.dir;
    identity_file = cfg.secrets.identityFile;
    ssh_host_keys = if cfg.secrets.useSshHostKeys then cfg.secrets.sshHostKeys else [ ];
    metrics_listen = cfg.metricsListen;
  } // cfg.extraConfig;
in
{
  options.services.slipway.agent = {
    enable = mkEnableOption "the Slipway agent (slipway-agent run), which pulls, switches, verifies and reverts this node's generations";

    package = mkOption {
      type = types.package;
      default = pkgs.slipway;
      defaultText = literalExpression "pkgs.slipway";
      description = "The Slipway package; its bin/slipway-agent is run. The flake's nixosModules set it to the flake's own package.";
    };

    server = mkOption {
      type = types.str;
      example = "http://slipway.tailnet.example:7420";
      description = ''
        The slipway-server this node pulls from: "http(s)://host[:port]" or
        "unix:///path/to.sock". Never put credentials in it: the node token
        lives in tokenFile.
      '';
    };

    nodeName = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = literalExpression "config.networking.hostName";
      description = "The name this node enrols and acts under (1 to 63 of [A-Za-z0-9._-]).";
    };

    labels = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { role = "web"; env = "prod"; };
      description = "Labels sent once, at enrolment; releases target nodes by them (`--target role=web`).";
    };

    joinTokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/keys/slipway-join-token";
      description = ''
        A file holding the one-time join token (from `slipway token create`),
        used to enrol when the node has no node token yet. Keep it out of the
        Nix store: give a path, not the token.
      '';
    };

    tokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Where the node token from enrolment is kept (0600). null: <stateDir>/node-token.";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/slipway";
      description = "The agent's state: state.db, generations/, store/, `current`, the node token and (by default) the age identity.";
    };

    unitDir = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/systemd/system.attached";
      description = ''
        Where generations made of units (not NixOS closures) link their unit
        files. null: the agent's default, /etc/systemd/system, which NixOS
        manages read-only; set a writable directory in systemd's search path
        if this node also takes unit generations. NixOS-closure generations
        do not use it.
      '';
    };

    linkPrefixes = mkOption {
      type = types.listOf types.str;
      default = [ "/etc" ];
      description = "The absolute directories a unit generation's file links may point into (never \"/\").";
    };

    keepGenerations = mkOption {
      type = types.int;
      default = 5;
      description = "How many generation directories (and NixOS system profile generations) GC keeps, besides the current and last good ones.";
    };

    secrets = {
      dir = mkOption {
        type = types.str;
        default = "/run/slipway/secrets";
        description = "Where decrypted secrets go (<dir>/<N>/<name>, with <dir>/current). Must be on a tmpfs and outside stateDir.";
      };

      identityFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/slipway/identity.age";
        description = "The node's age identity, created (0600) at the agent's first start if missing. null: <stateDir>/identity.age.";
      };

      useSshHostKeys = mkOption {
        type = types.bool;
        default = true;
        description = "Also decrypt with the SSH host keys (sshHostKeys), so secrets sealed for agenix to the host keys work unchanged.";
      };

      sshHostKeys = mkOption {
        type = types.listOf types.str;
        default = [ "/etc/ssh/ssh_host_ed25519_key" "/etc/ssh/ssh_host_rsa_key" ];
        description = "The OpenSSH private host keys used when useSshHostKeys is set; missing files are skipped.";
      };
    };

    logLevel = mkOption {
      type = types.enum [ "debug" "info" "warn" "error" ];
      default = "info";
      description = "The agent's log level (a reload, SIGHUP, re-reads it).";
    };

    metricsListen = mkOption {
      type = types.str;
      default = "127.0.0.1:9432";
      description = "host:port of the Prometheus endpoint (/metrics, no authentication: keep it on loopback or a monitoring network); \"\" disables it.";
    };

    extraConfig = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.bool (types.listOf types.str) ]);
      default = { };
      example = { poll_wait = "1m"; report_interval = "2m"; job_timeout = "5m"; };
      description = ''
        More keys of /etc/slipway/agent.toml, over the ones above (e.g.
        poll_wait, report_interval, job_timeout). They must be keys the agent
        knows: it refuses to start on an unknown key.
      '';
    };
  };

  config = mkIf cfg.enable {
    environment.etc."slipway/agent.toml".text = toml.toTOML settings;

    environment.systemPackages = [ cfg.package ];

    systemd.services.slipway-agent = {
      description = "Slipway agent: pull, switch, verify and revert this node's generations";
      documentation = [ "https://github.com/slipway-dev/slipway" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nix-daemon.socket" ];
      # A switch must not kill its switcher: switch-to-configuration, run by
      # this agent, would otherwise stop or restart this very unit.
      restartIfChanged = false;
      stopIfChanged = false;
      reloadTriggers = [ config.environment.etc."slipway/agent.toml".text ];
      # nix-store/nix-env/nix for the NixOS driver, systemctl for units.
      path = [ config.nix.package config.systemd.package ];
      unitConfig.StartLimitIntervalSec = 0;
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${cfg.package}/bin/slipway-agent --config /etc/slipway/agent.toml --log-format json run";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "always";
        RestartSec = "10s";
        WatchdogSec = "60s";
        TimeoutStartSec = "15min";
        TimeoutStopSec = "6min";
        # SIGTERM to the agent only: it reverts a switch in progress first.
        KillMode = "mixed";
        # Secrets live under /run/slipway (a tmpfs); keep them across agent
        # restarts, the services using them keep running.
        RuntimeDirectory = "slipway";
        RuntimeDirectoryMode = "0755"; # secrets below it carry their own owners and modes
        RuntimeDirectoryPreserve = "yes";
        # Runs as root with no sandbox: switch-to-configuration runs the
        # activation script (hostname, sysctls, setuid wrappers, boot
        # loader), and the agent can switch the system to anything anyway.
      };
    };

    systemd.tmpfiles.rules = [ "d ${cfg.stateDir} 0700 root root -" ];
  };
}
