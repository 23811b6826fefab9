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
# The mesh (both default off): tailscale.enable makes the agent a tailnet
# node of its own (tsnet, in-process; independent of services.tailscale),
# or with tailscale.mode = "host" uses the host's tailscaled
# (services.tailscale, ordered before the agent), which the server knows by
# WhoIs: no join token, no node token, and the
# node name is its tailnet host name. gossip.enable makes it a serf member
# that the server wakes when its desired generation changes. The auth key
# and the gossip keyring are files named by path, read by the agent (root)
# at start: never Nix strings, which would land in the world-readable store.
# Like every key but log_level they take effect at the agent's next restart
# (`systemctl restart slipway-agent`; a switch never restarts it).
#
# The generated /etc/slipway/agent.toml uses exactly the keys of
# agent/config (unknown keys are errors there); the [tailscale] and
# [gossip] sections are written only when enabled. The option types
# (types.nix) and the assertions refuse at evaluation what agent/config
# refuses at start; extraConfig may not set a key that has an option.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression hasPrefix optional;
  cfg = config.services.slipway.agent;
  toml = import ./toml.nix;
  slipwayTypes = import ./types.nix { inherit lib; };
  ts = cfg.tailscale;
  gossip = cfg.gossip;
  # tailscale.mode = "host": the host's own tailscaled (services.tailscale).
  hostMode = ts.enable && ts.mode == "host";
  # Options of the other mode that are set (refused by an assertion).
  tsnetOnlySet = builtins.filter (n: n != null) [
    (if ts.hostname != null then "hostname" else null)
    (if ts.controlUrl != null then "controlUrl" else null)
    (if ts.authKeyFile != null then "authKeyFile" else null)
    (if ts.stateDir != null then "stateDir" else null)
    (if ts.ephemeral then "ephemeral" else null)
  ];
  hostOnlySet = builtins.filter (n: n != null) [
    (if ts.socket != null then "socket" else null)
    (if ts.proxy != null then "proxy" else null)
  ];

  # within dir p: p is dir or inside it. Decrypted secrets may be in
  # neither the state nor the unit directory (agent/config's rule).
  within = dir: p: p == dir || hasPrefix (lib.removeSuffix "/" dir + "/") p;
  overlaps = a: b: within a b || within b a;
  secretsOverlap = builtins.filter (d: overlaps cfg.secrets.dir d.dir) [
    { name = "stateDir"; dir = cfg.stateDir; }
    { name = "unitDir"; dir = if cfg.unitDir == null then "/etc/systemd/system" else cfg.unitDir; }
  ];

  # Label keys not ^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$ (agent/config); the
  # values are checked by their type.
  badLabelKeys = builtins.filter (k: builtins.match "[A-Za-z0-9][A-Za-z0-9._/-]{0,62}" k == null) (builtins.attrNames cfg.labels);

  # server as a list (one address or several to fail over between).
  servers = if builtins.isList cfg.server then cfg.server else [ cfg.server ];
  unixServers = builtins.filter (hasPrefix "unix:") servers;
  duplicateServers = lib.unique (builtins.filter (s: builtins.length (builtins.filter (x: lib.removeSuffix "/" x == lib.removeSuffix "/" s) servers) > 1) servers);

  settings = {
    server = cfg.server;
    tls_ca_file = cfg.tlsCaFile;
    node_name = cfg.nodeName;
    labels = cfg.labels;
    join_token_file = cfg.joinTokenFile;
    token_file = cfg.tokenFile;
    state_dir = cfg.stateDir;
    unit_dir = cfg.unitDir;
    link_prefixes = cfg.linkPrefixes;
    keep_generations = cfg.keepGenerations;
    job_timeout = cfg.jobTimeout;
    poll_wait = cfg.pollWait;
    report_interval = cfg.reportInterval;
    overload_confirm_timeout = cfg.overloadConfirmTimeout;
    log_level = cfg.logLevel;
    secrets_dir = cfg.secrets.dir;
    identity_file = cfg.secrets.identityFile;
    ssh_host_keys = if cfg.secrets.useSshHostKeys then cfg.secrets.sshHostKeys else [ ];
    metrics_listen = cfg.metricsListen;
    tailscale = if !ts.enable then null else if hostMode then {
      enabled = true;
      mode = "host";
      socket = ts.socket;
      proxy = ts.proxy;
      tags = ts.tags;
    } else {
      enabled = true;
      hostname = ts.hostname;
      control_url = ts.controlUrl;
      auth_key_file = ts.authKeyFile;
      state_dir = ts.stateDir;
      tags = ts.tags;
      ephemeral = ts.ephemeral;
    };
    gossip = if gossip.enable then {
      enabled = true;
      bind = gossip.bind;
      advertise = gossip.advertise;
      keyring_file = gossip.keyringFile;
      insecure_no_encryption = gossip.insecureNoEncryption;
      join = gossip.join;
      poll_interval = gossip.pollInterval;
    } else null;
  };
  # extraConfig keys that have an option: set through it, checked.
  shadowed = builtins.filter (k: settings ? ${k}) (builtins.attrNames cfg.extraConfig);
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
      type = types.either slipwayTypes.serverUrl (types.nonEmptyListOf slipwayTypes.serverUrl);
      example = [ "http://slipway-a.tailnet.example:7420" "http://slipway-b.tailnet.example:7420" ];
      description = ''
        The slipway-server this node pulls from: "http(s)://host[:port]" or
        "unix:///path/to.sock"; or a list of them (several servers on one
        etcd store), tried in order: the agent sticks to the one in use and
        moves to the next when it does not answer (refused, reset, timed
        out, a proxy's 502/504/bare 503), never for an overload answer.
        A confirm answered by any of them counts; a switch reverts for lack
        of a server only when none answered within confirm_timeout. Never
        put credentials in it: the node token lives in tokenFile.
      '';
    };

    tlsCaFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/slipway/server-ca.pem";
      description = "For an https:// server: the CA certificates (PEM) its certificate is verified against, e.g. a private CA's. null: the system's roots.";
    };

    nodeName = mkOption {
      type = slipwayTypes.nodeName;
      default = config.networking.hostName;
      defaultText = literalExpression "config.networking.hostName";
      description = "The name this node enrols and acts under: 1 to 63 of [A-Za-z0-9._-], starting with a letter or digit (with tailscale.enable, one lower-case DNS label). The default, the host name, may be empty on NixOS (DHCP-assigned): then set it.";
    };

    labels = mkOption {
      type = types.attrsOf slipwayTypes.labelValue;
      default = { };
      example = { role = "web"; env = "prod"; };
      description = "Labels sent once, at enrolment; releases target nodes by them (`--target role=web`). Keys: 1 to 63 of [A-Za-z0-9._/-], starting with a letter or digit; values: at most 63 of [A-Za-z0-9._-].";
    };

    joinTokenFile = mkOption {
      type = types.nullOr slipwayTypes.absolutePath;
      default = null;
      example = "/run/keys/slipway-join-token";
      description = ''
        A file holding the one-time join token (from `slipway token create`),
        used to enrol when the node has no node token yet. Keep it out of the
        Nix store: give a path, not the token.
      '';
    };

    tokenFile = mkOption {
      type = types.nullOr slipwayTypes.absolutePath;
      default = null;
      description = "Where the node token from enrolment is kept (0600). null: <stateDir>/node-token.";
    };

    stateDir = mkOption {
      type = slipwayTypes.absolutePath;
      default = "/var/lib/slipway";
      description = "The agent's state: state.db, generations/, store/, `current`, the node token and (by default) the age identity.";
    };

    unitDir = mkOption {
      type = types.nullOr slipwayTypes.absolutePath;
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
      type = types.listOf slipwayTypes.absolutePath;
      default = [ "/etc" ];
      description = "The absolute directories a unit generation's file links may point into (never \"/\").";
    };

    keepGenerations = mkOption {
      type = types.ints.positive;
      default = 5;
      description = "How many good (confirmed) generations GC keeps, besides the current and last good ones; failed generations never count toward it, so they cannot push a rollback target out. NixOS system profile generations: this many plus two.";
    };

    secrets = {
      dir = mkOption {
        type = slipwayTypes.absolutePath;
        default = "/run/slipway/secrets";
        description = "Where decrypted secrets go (<dir>/<N>/<name>, with <dir>/current). Must be on a tmpfs and outside stateDir.";
      };

      identityFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
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
        type = types.listOf slipwayTypes.absolutePath;
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
      type = slipwayTypes.listenOrDisabled;
      default = "127.0.0.1:9432";
      description = "\"host:port\" (or \":port\", every address) of the Prometheus endpoint (/metrics, no authentication: keep it on loopback or a monitoring network); \"\" disables it.";
    };

    pollWait = mkOption {
      type = slipwayTypes.duration "1s" "5m";
      default = "55s";
      description = "How long one long-poll for the desired generation waits on the server (a Go duration, 1s to 5m). Not used with gossip.enable (see gossip.pollInterval).";
    };

    reportInterval = mkOption {
      type = slipwayTypes.duration "1s" null;
      default = "60s";
      description = "The longest time between two status reports to the server (a Go duration, at least 1s).";
    };

    jobTimeout = mkOption {
      type = slipwayTypes.duration "1ns" null;
      default = "3m";
      description = "How long one batch of systemd jobs (stops, restarts, starts) in a switch may take (a Go duration).";
    };

    overloadConfirmTimeout = mkOption {
      type = slipwayTypes.duration "1s" "1h";
      default = "5m";
      description = ''
        How long a switched node waits for the server's confirm while the
        server answers but is overloaded (429 or 5xx): an overloaded server
        never reverts a healthy node before this. A server that does not
        answer at all reverts it after the release's confirm_timeout, as
        always. Never shorter than confirm_timeout (a Go duration, 1s to 1h).
      '';
    };

    tailscale = {
      enable = mkEnableOption ''
        the agent's own tailnet node ([tailscale] in agent.toml): it joins
        the tailnet in-process (tsnet, no tailscaled needed) and talks to the
        server through it. The server identifies the node by WhoIs: it
        enrols at every start without a join token (joinTokenFile is not
        used), needs no node token, and may act only for the node named like
        its tailnet host name, which is nodeName (one lower-case DNS label).
        Set server to the server's MagicDNS name, e.g. "http://slipway"; a
        unix:// server is not on the tailnet'';

      mode = mkOption {
        type = types.enum [ "tsnet" "host" ];
        default = "tsnet";
        description = ''
          "tsnet": the agent is a tailnet node of its own, in-process (the
          options below configure it). "host": the agent uses this host's
          own tailscaled (services.tailscale) through its LocalAPI socket:
          the host must be on the tailnet as nodeName and carry the agent tag
          (`tailscale up --hostname=<nodeName>
          --advertise-tags=tag:slipway-agent`, e.g. through
          services.tailscale.extraUpFlags), or the agent refuses to start. The
          unit then wants and starts after tailscaled.service. hostname,
          controlUrl, authKeyFile, stateDir and ephemeral are for "tsnet"
          only; socket and proxy for "host" only; tags are, in host mode, the
          tags the host must carry.
        '';
      };

      socket = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/run/tailscale/tailscaled.sock";
        description = "mode = \"host\": the host tailscaled's LocalAPI socket. null: /var/run/tailscale/tailscaled.sock (services.tailscale's).";
      };

      proxy = mkOption {
        type = types.nullOr (types.strMatching "socks5://[^/@ ]+:[0-9]+/?");
        default = null;
        example = "socks5://127.0.0.1:1055";
        description = ''
          mode = "host", with tailscaled in userspace networking
          (services.tailscale.interfaceName = "userspace-networking" and
          --socks5-server in its extraDaemonFlags): its SOCKS5 proxy, which the
          agent's requests go through (the host has no tailnet interface
          then; the agent refuses to start without it). null: the host's
          tailnet interface. Gossip cannot run through it.
        '';
      };

      hostname = mkOption {
        type = types.nullOr slipwayTypes.dnsLabel;
        default = null;
        description = ''
          The node's tailnet host name. It must be nodeName (the server lets
          a tailnet node act only for the node named like its host name), so
          leave it null, which means nodeName; any other value is refused.
        '';
      };

      controlUrl = mkOption {
        type = types.nullOr slipwayTypes.controlUrl;
        default = null;
        example = "https://headscale.example.com";
        description = "The coordination server: null is Tailscale's; for Headscale its server_url (http(s)://host[:port], no credentials).";
      };

      authKeyFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/run/keys/slipway-tailscale-authkey";
        description = ''
          A file holding the auth key (tskey-…, or a Headscale pre-auth key,
          e.g. made with --tags tag:slipway-agent), read by the agent (root)
          at start; needed for the first start only. Give a path, never the
          key: a Nix string would land in the world-readable Nix store (use
          agenix, sops-nix or /run/keys). null: TS_AUTHKEY, or the state of
          an already authorised node.
        '';
      };

      stateDir = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/var/lib/slipway/tailscale";
        description = "The tailnet node's state (its keys; keep it across reboots, or the node must be authorised again). null: <stateDir>/tailscale.";
      };

      tags = mkOption {
        type = types.listOf slipwayTypes.tag;
        default = [ "tag:slipway-agent" ];
        description = "The ACL tags the node advertises (tag:name); the server requires its agent tag (default tag:slipway-agent). [] advertises none: the auth key must then carry the tag.";
      };

      ephemeral = mkOption {
        type = types.bool;
        default = false;
        description = "Register an ephemeral node, removed from the tailnet when it goes offline.";
      };
    };

    gossip = {
      enable = mkEnableOption ''
        gossip ([gossip] in agent.toml): the agent joins the fleet's serf
        cluster as a member named after the node, tagged with its labels and
        current generation, and the server wakes it at once when its desired
        generation changes. It then polls every gossip.pollInterval instead
        of holding a long-poll (poll_wait is not used). Gossip trouble never
        stops the agent: the poll is the fallback. With tailscale.enable,
        gossip runs inside the tailnet node (its tailnet IPv4, bind's port)'';

      bind = mkOption {
        type = slipwayTypes.bindAddress;
        default = "0.0.0.0:7946";
        description = "\"ip:port\" (or \":port\", every address) serf listens on, UDP and TCP. With tailscale.enable only its port counts: gossip then runs on the tailnet node's IPv4 address.";
      };

      advertise = mkOption {
        type = types.nullOr slipwayTypes.advertiseAddress;
        default = null;
        example = "10.0.0.7:7946";
        description = "\"ip:port\" other members reach this one at. null: the bound address (or the tailnet address).";
      };

      keyringFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/run/keys/slipway-gossip.keyring";
        description = ''
          A file holding the cluster's encryption keys: base64 (16, 24 or 32
          bytes; `head -c32 /dev/urandom | base64`), one a line, the first
          encrypts, all decrypt; the same keys as the server's. Read by the
          agent (root) at start. Give a path, never the keys: a Nix string
          would land in the world-readable Nix store. Required unless
          insecureNoEncryption.
        '';
      };

      insecureNoEncryption = mkOption {
        type = types.bool;
        default = false;
        description = "Run gossip unencrypted instead of with keyringFile (tests, or a network that encrypts already, such as a tailnet nobody else is on): anyone who reaches bind can then join the cluster and read or send its events.";
      };

      join = mkOption {
        type = types.listOf slipwayTypes.memberAddress;
        default = [ ];
        example = [ "slipway:7946" ];
        description = "\"host:port\" of members to join (a failed join is retried with backoff). []: the host of server on port 7946.";
      };

      pollInterval = mkOption {
        type = slipwayTypes.duration "1s" null;
        default = "60s";
        description = "Time between two polls of the desired generation while gossip is on, jittered by ±10% (a Go duration, at least 1s).";
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open bind's port (TCP and UDP) in the firewall. Not needed with tailscale.enable: gossip then runs inside the tailnet node, not on a host port.";
      };
    };

    extraConfig = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.bool (types.listOf types.str) ]);
      default = { };
      example = { some_new_key = "value"; };
      description = ''
        More keys of /etc/slipway/agent.toml, for settings that have no
        option here (an agent newer than this module). They must be keys
        the agent knows: it refuses to start on an unknown key. A key that
        has an option is refused: set the option.
      '';
    };
  };

  config = mkIf cfg.enable {
    # The rules of agent/config that a module can check before a switch.
    assertions = [
      {
        assertion = badLabelKeys == [ ];
        message = "services.slipway.agent.labels: key ${builtins.toJSON badLabelKeys} not 1 to 63 of [A-Za-z0-9._/-] starting with a letter or digit";
      }
      {
        assertion = !(builtins.elem "/" cfg.linkPrefixes);
        message = "services.slipway.agent.linkPrefixes: \"/\" would let a release link anywhere";
      }
      {
        assertion = secretsOverlap == [ ];
        message = "services.slipway.agent.secrets.dir ${cfg.secrets.dir} overlaps ${lib.concatMapStringsSep " and " (d: "${d.name} ${d.dir}") secretsOverlap}: decrypted secrets go to a tmpfs of their own (default /run/slipway/secrets), never to the state directory";
      }
      {
        assertion = shadowed == [ ];
        message = "services.slipway.agent.extraConfig: ${builtins.toJSON shadowed} have options of their own: set those (they are checked), not extraConfig";
      }
      {
        assertion = !ts.enable || slipwayTypes.dnsLabel.check cfg.nodeName;
        message = "services.slipway.agent.nodeName \"${cfg.nodeName}\" cannot be a tailnet host name (one lower-case DNS label: a-z, 0-9, -), which it is with tailscale.enable";
      }
      {
        assertion = !ts.enable || ts.hostname == null || ts.hostname == cfg.nodeName;
        message = "services.slipway.agent.tailscale.hostname must be nodeName (the server authorises a tailnet node by its host name); leave it null";
      }
      {
        assertion = !ts.enable || unixServers == [ ];
        message = "services.slipway.agent.server: ${builtins.toJSON unixServers}: a unix socket is not on the tailnet; with tailscale.enable use http://<the server's MagicDNS name>";
      }
      {
        assertion = duplicateServers == [ ];
        message = "services.slipway.agent.server: ${builtins.toJSON duplicateServers} given more than once";
      }
      {
        assertion = !hostMode || tsnetOnlySet == [ ];
        message = "services.slipway.agent.tailscale: ${builtins.toJSON tsnetOnlySet} are for mode = \"tsnet\" only; with mode = \"host\" the host's tailscaled is configured with `tailscale up` (services.tailscale)";
      }
      {
        assertion = !ts.enable || hostMode || hostOnlySet == [ ];
        message = "services.slipway.agent.tailscale: ${builtins.toJSON hostOnlySet} are for mode = \"host\" only";
      }
      {
        assertion = !(hostMode && ts.proxy != null && gossip.enable);
        message = "services.slipway.agent.gossip cannot run through tailscaled's SOCKS5 proxy (tailscale.proxy): disable gossip or give tailscaled a TUN device";
      }
      {
        assertion = !gossip.enable || gossip.join != [ ] || unixServers != servers;
        message = "services.slipway.agent.gossip.join is required when every server is a unix socket (the default joins the servers' hosts on port 7946)";
      }
      {
        assertion = !gossip.enable || ((gossip.keyringFile != null) != gossip.insecureNoEncryption);
        message = "services.slipway.agent.gossip: set exactly one of keyringFile and insecureNoEncryption = true";
      }
    ];

    warnings = optional (ts.enable && cfg.joinTokenFile != null)
      "services.slipway.agent.joinTokenFile is not used with tailscale.enable: the node enrols by its tailnet identity"
      ++ optional (hostMode && !(config.services.tailscale.enable or false))
      "services.slipway.agent.tailscale.mode = \"host\" uses the host's tailscaled, but services.tailscale.enable is not set: run tailscaled some other way, or enable it";

    environment.etc."slipway/agent.toml".text = toml.toTOML (settings // cfg.extraConfig);

    networking.firewall = mkIf (gossip.enable && gossip.openFirewall) {
      allowedTCPPorts = [ (slipwayTypes.portOf gossip.bind) ];
      allowedUDPPorts = [ (slipwayTypes.portOf gossip.bind) ];
    };

    environment.systemPackages = [ cfg.package ];

    systemd.services.slipway-agent = {
      description = "Slipway agent: pull, switch, verify and revert this node's generations";
      documentation = [ "https://github.com/slipway-dev/slipway" ];
      wantedBy = [ "multi-user.target" ];
      # In host mode the agent asks the host's tailscaled at start.
      wants = [ "network-online.target" ] ++ optional hostMode "tailscaled.service";
      after = [ "network-online.target" "nix-daemon.socket" ] ++ optional hostMode "tailscaled.service";
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
