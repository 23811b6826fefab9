# services.slipway.server: slipway-server, the coordinator of a Slipway
# fleet, in a hardened unit: a dynamic user, only its state and runtime
# directories writable, no capabilities.
#
# Secrets are given as files, never as Nix strings (those would land in the
# world-readable Nix store): admin tokens, the Tailscale auth key and the
# gossip keyring. systemd hands each file to the dynamic user as a
# credential (LoadCredential), so the files may stay root-only (0600); the
# generated server.toml names the credential copies. systemd copies
# credentials when the unit starts: a changed file takes effect at a
# restart.
#
# `systemctl reload slipway-server` (SIGHUP) applies admin_token, log_level
# and [tailscale.roles] at once; every other key needs a restart. So
# nixos-rebuild reloads the server when only those changed
# (reloadTriggers) and restarts it when anything else in server.toml did
# (restartTriggers).
#
# [tailscale] runs a tailnet node inside the server (tsnet, userspace
# networking: no tailscaled, no TUN device, no capability), or with
# tailscale.mode = "host" uses the host's tailscaled (its tailnet addresses,
# WhoIs through its LocalAPI socket; ordered after tailscaled.service). Its state is
# under the StateDirectory, and it enumerates network interfaces over
# netlink, so the unit then also allows AF_NETLINK sockets (without them
# tsnet fails to start: "netlinkrib: address family not supported").
#
# HTTPS on listen (tls_cert_file, tls_key_file) has no option here: a
# credential is copied when the unit starts, so a reload could not pick up
# a renewed certificate. Set the two keys in extraConfig to files the
# dynamic user can read (e.g. security.acme's, with SupplementaryGroups =
# [ "acme" ] on the unit) and reload after a renewal. [limits] (a section)
# is not expressible in extraConfig either; its defaults apply.
#
# The generated /etc/slipway/server.toml uses exactly the keys of
# server/config (unknown keys are errors there); the [tailscale] and
# [gossip] sections are written only when enabled. The option types
# (types.nix) and the assertions refuse at evaluation what server/config
# refuses at start; extraConfig may not set a key that has an option.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression mapAttrsToList hasPrefix removePrefix optional;
  cfg = config.services.slipway.server;
  ts = cfg.tailscale;
  gossip = cfg.gossip;
  toml = import ./toml.nix;
  slipwayTypes = import ./types.nix { inherit lib; };
  credDir = "/run/credentials/slipway-server.service";
  roleType = types.enum [ "viewer" "deployer" "admin" ];

  inherit (slipwayTypes) portOf;
  isLoopback = addr: builtins.elem (slipwayTypes.hostOf addr) [ "localhost" "[::1]" ] || hasPrefix "127." (slipwayTypes.hostOf addr);

  badTokenNames = builtins.filter (n: !(slipwayTypes.nodeName.check n)) (builtins.attrNames cfg.adminTokens);
  # [tailscale.roles] keys: a tag, or a user's login name (no spaces).
  badPrincipals = builtins.filter
    (p: if hasPrefix "tag:" p then !(slipwayTypes.tag.check p) else builtins.match "[^[:space:]]+" p == null)
    (builtins.attrNames ts.roles);
  within = dir: p: p == dir || hasPrefix "${dir}/" p;
  # tailscale.mode = "host": the host's own tailscaled (services.tailscale).
  hostMode = ts.enable && ts.mode == "host";
  tsnetOnlySet = builtins.filter (n: n != null) [
    (if ts.hostname != "slipway" then "hostname" else null)
    (if ts.controlUrl != null then "controlUrl" else null)
    (if ts.authKeyFile != null then "authKeyFile" else null)
    (if ts.stateDir != null then "stateDir" else null)
  ];
  tsStateDir = if ts.stateDir != null then ts.stateDir else "${cfg.stateDir}/tailscale";
  # The unit can write only its StateDirectory: tailscale.stateDir outside
  # stateDir (under /var/lib, asserted) becomes a second one.
  stateDirs = [ cfg.stateDir ] ++ optional (ts.enable && !hostMode && !(within cfg.stateDir tsStateDir)) tsStateDir;

  credentials = mapAttrsToList (name: t: "admin-token-${name}:${t.file}") cfg.adminTokens
    ++ optional (ts.enable && ts.authKeyFile != null) "tailscale-auth-key:${ts.authKeyFile}"
    ++ optional (gossip.enable && gossip.keyringFile != null) "gossip-keyring:${gossip.keyringFile}"
    ++ lib.optionals etcd (map (c: "${c.name}:${c.file}") storeCredentials);

  gossipFirewall = gossip.enable && gossip.openFirewall;

  # [store]: written only for etcd (bolt is the server's default). The
  # TLS files and the password are passed as credentials like the tokens.
  store = cfg.store;
  etcd = store.kind == "etcd";
  storeCredentials = lib.filter (c: c.file != null) [
    { name = "etcd-ca"; key = "ca_file"; file = store.caFile; }
    { name = "etcd-cert"; key = "cert_file"; file = store.certFile; }
    { name = "etcd-key"; key = "key_file"; file = store.keyFile; }
    { name = "etcd-password"; key = "password_file"; file = store.passwordFile; }
  ];
  storeSettings = if !etcd then null else {
    kind = "etcd";
    endpoints = store.endpoints;
    prefix = store.prefix;
    username = store.username;
    dial_timeout = store.dialTimeout;
    request_timeout = store.requestTimeout;
    lease_ttl = store.leaseTtl;
  } // builtins.listToAttrs (map (c: { name = c.key; value = "${credDir}/${c.name}"; }) storeCredentials);
  # etcd keys set with kind = "bolt" (server/config refuses them).
  etcdOnlySet = builtins.filter (n: n != null) [
    (if store.endpoints != [ ] then "endpoints" else null)
    (if store.caFile != null then "caFile" else null)
    (if store.certFile != null then "certFile" else null)
    (if store.keyFile != null then "keyFile" else null)
    (if store.username != null then "username" else null)
    (if store.passwordFile != null then "passwordFile" else null)
  ];
  leaseNs = slipwayTypes.durationNs store.leaseTtl;

  settings = {
    listen = cfg.listen;
    agent_socket = cfg.agentSocket;
    state_dir = cfg.stateDir;
    offline_after = cfg.offlineAfter;
    drift_after = cfg.driftAfter;
    agent_write_limit = cfg.agentWriteLimit;
    agent_write_wait = cfg.agentWriteWait;
    log_level = cfg.logLevel;
    metrics_listen = cfg.metricsListen;
    admin_token = mapAttrsToList
      (name: t: {
        inherit name;
        inherit (t) role;
        file = "${credDir}/admin-token-${name}";
      })
      cfg.adminTokens;
    tailscale = if !ts.enable then null else if hostMode then {
      enabled = true;
      mode = "host";
      socket = ts.socket;
      agent_tag = ts.agentTag;
      listen = ts.listen;
      roles = if ts.roles == { } then null else ts.roles;
    } else {
      enabled = true;
      hostname = ts.hostname;
      control_url = ts.controlUrl;
      auth_key_file = if ts.authKeyFile == null then null else "${credDir}/tailscale-auth-key";
      state_dir = ts.stateDir;
      agent_tag = ts.agentTag;
      listen = ts.listen;
      roles = if ts.roles == { } then null else ts.roles;
    };
    gossip = if gossip.enable then {
      enabled = true;
      bind = gossip.bind;
      advertise = gossip.advertise;
      node_name = gossip.nodeName;
      keyring_file = if gossip.keyringFile == null then null else "${credDir}/gossip-keyring";
      insecure_no_encryption = gossip.insecureNoEncryption;
      join = gossip.join;
    } else null;
    store = storeSettings;
  };
  # extraConfig keys that have an option: set through it, checked.
  shadowed = builtins.filter (k: settings ? ${k}) (builtins.attrNames cfg.extraConfig);
  fullSettings = settings // cfg.extraConfig;

  # settings without what a reload applies (admin_token, log_level,
  # tailscale.roles): when this changes, the server must restart.
  restartSettings = removeAttrs fullSettings [ "admin_token" "log_level" ]
    // (if settings.tailscale == null then { } else { tailscale = removeAttrs settings.tailscale [ "roles" ]; });
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
      type = slipwayTypes.listenAddress;
      default = "127.0.0.1:7420";
      example = "100.64.0.1:7420";
      description = ''
        "host:port" (or ":port", every address) of the API (admins and
        agents). Loopback by default: expose it on the tailnet address, not
        on a public interface. Ports below 1024 are refused (the unit has no
        capabilities).
      '';
    };

    agentSocket = mkOption {
      type = types.nullOr slipwayTypes.absolutePath;
      default = null;
      example = "/run/slipway-server/agent.sock";
      description = "A unix socket for agents on this machine (or containers it is bind-mounted into); it must be under /run/slipway-server, the only runtime directory the unit can write. null: none.";
    };

    stateDir = mkOption {
      type = slipwayTypes.absolutePath;
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
            type = slipwayTypes.absolutePath;
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
      type = slipwayTypes.duration "1ns" null;
      default = "3m";
      description = "A node not heard from for this long is offline (a Go duration).";
    };

    driftAfter = mkOption {
      type = slipwayTypes.duration "1ns" null;
      default = "2m";
      description = "A node that has not reached its desired generation for this long is drifting (a Go duration).";
    };

    agentWriteLimit = mkOption {
      type = types.ints.between 1 100000;
      default = 4096;
      description = ''
        How many agent writes (enrolments, status reports, confirms) the
        server works on at once; one more waits up to agentWriteWait for a
        slot, then is answered 429 with Retry-After, which agents retry
        without reverting (1 to 100000).
      '';
    };

    agentWriteWait = mkOption {
      type = slipwayTypes.duration "0s" "30s";
      default = "2s";
      description = "How long an agent write beyond agentWriteLimit waits for a slot before it is answered 429 (a Go duration, 0s to 30s; 0s: at once).";
    };

    logLevel = mkOption {
      type = types.enum [ "debug" "info" "warn" "error" ];
      default = "info";
      description = "The server's log level (a reload, SIGHUP, re-reads it).";
    };

    metricsListen = mkOption {
      type = slipwayTypes.listenOrDisabled;
      default = "127.0.0.1:9431";
      description = "\"host:port\" (or \":port\", every address) of the Prometheus endpoint (/metrics, no authentication; an address of its own, not listen); \"\" disables it.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the API's port in the firewall (only useful when listen is not loopback).";
    };

    tailscale = {
      enable = mkEnableOption ''
        the server's own tailnet node ([tailscale] in server.toml): it also
        serves the API there, in-process (tsnet; no tailscaled needed).
        Agents reach it by MagicDNS name (http://slipway) and are
        authorised by WhoIs instead of node tokens: the caller must carry
        agentTag and acts only for its own host name; it enrols without a
        join token. Admin requests with a bearer token work as on listen;
        without one they get the role tailscale.roles gives the caller'';

      mode = mkOption {
        type = types.enum [ "tsnet" "host" ];
        default = "tsnet";
        description = ''
          "tsnet": the server is a tailnet node of its own, in-process.
          "host": it uses this host's own tailscaled (services.tailscale,
          with a TUN device) through its LocalAPI socket: it listens on the
          host's tailnet addresses with listen's port (1024 or above: the
          unit has no capabilities) and authorises by WhoIs there. The unit
          then wants and starts after tailscaled.service; hostname,
          controlUrl, authKeyFile and stateDir are for "tsnet" only (the
          host's name is set with `tailscale up --hostname`).
        '';
      };

      socket = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/run/tailscale/tailscaled.sock";
        description = "mode = \"host\": the host tailscaled's LocalAPI socket. null: /var/run/tailscale/tailscaled.sock (services.tailscale's).";
      };

      hostname = mkOption {
        type = slipwayTypes.dnsLabel;
        default = "slipway";
        description = "The server's tailnet (MagicDNS) host name, one lower-case DNS label; agents use server = \"http://<hostname>\".";
      };

      controlUrl = mkOption {
        type = types.nullOr slipwayTypes.controlUrl;
        default = null;
        example = "https://headscale.example.com";
        description = "The coordination server: null is Tailscale's; for Headscale its server_url.";
      };

      authKeyFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/run/keys/slipway-server-tailscale-authkey";
        description = ''
          A file holding the auth key (tskey-… or a Headscale pre-auth key);
          needed for the first start only. Passed to the server as a systemd
          credential (root-only is fine) and read at start. Give a path,
          never the key: a Nix string would land in the world-readable Nix
          store. null: the state of an already authorised node.
        '';
      };

      stateDir = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/var/lib/slipway-server/tailscale";
        description = ''
          The tailnet node's state (its keys; keep it, or the node must be
          authorised again). null: <stateDir>/tailscale. The unit can write
          only its state directories: a directory outside stateDir must be
          under /var/lib, and becomes a StateDirectory of its own.
        '';
      };

      agentTag = mkOption {
        type = slipwayTypes.tag;
        default = "tag:slipway-agent";
        description = "The ACL tag a tailnet node must carry to act as an agent (tag:name). It can have no admin role.";
      };

      listen = mkOption {
        type = slipwayTypes.listenAddress;
        default = ":80";
        description = "\"host:port\" or \":port\" of the API on the tailnet node (userspace networking: ports below 1024 need no capability). Nothing opens on the host.";
      };

      roles = mkOption {
        type = types.attrsOf roleType;
        default = { };
        example = { "alice@example.com" = "admin"; "tag:ci" = "deployer"; };
        description = ''
          Admin roles ([tailscale.roles]) for admin requests over the tailnet
          that carry no bearer token: a user's login name or a tag (tag:name)
          mapped to viewer, deployer or admin. A caller gets the highest role
          of its user or tags (a tagged node has no user); no identity is
          401, no role 403, refusals are audited. agentTag can have no role.
          A change is applied by a reload, without a restart.
        '';
      };
    };

    gossip = {
      enable = mkEnableOption ''
        gossip ([gossip] in server.toml): the server joins the agents' serf
        cluster, records every node's liveness (`slipway nodes`) and wakes
        the agents whose desired generation changed at once, instead of at
        their next poll. With tailscale.enable, gossip runs inside the
        server's tailnet node (its tailnet IPv4, bind's port)'';

      bind = mkOption {
        type = slipwayTypes.bindAddress;
        default = "0.0.0.0:7946";
        description = "\"ip:port\" (or \":port\", every address) serf listens on, UDP and TCP. With tailscale.enable only its port counts. Otherwise the port must be 1024 or above (the unit has no capabilities).";
      };

      advertise = mkOption {
        type = types.nullOr slipwayTypes.advertiseAddress;
        default = null;
        example = "10.0.0.5:7946";
        description = "Address the other members use. null: bind's (or the tailnet address).";
      };

      nodeName = mkOption {
        type = slipwayTypes.nodeName;
        default = "slipway-server";
        description = "The server's serf member name (1 to 63 of [A-Za-z0-9._-]); it must not be a node's name.";
      };

      keyringFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/run/keys/slipway-gossip.keyring";
        description = ''
          A file holding the cluster's encryption keys: base64 (16, 24 or 32
          bytes; `head -c32 /dev/urandom | base64`), one a line, the first
          encrypts, all decrypt; the agents need the same keys. Passed to the
          server as a systemd credential (root-only is fine) and read at
          start: after a key rotation, restart the server. Give a path, never
          the keys: a Nix string would land in the world-readable Nix store.
          Required unless insecureNoEncryption.
        '';
      };

      insecureNoEncryption = mkOption {
        type = types.bool;
        default = false;
        description = "Run gossip unencrypted instead of with keyringFile, only on a network nobody else reaches: anyone who reaches bind can then join the cluster and read or send its events.";
      };

      join = mkOption {
        type = types.listOf slipwayTypes.memberAddress;
        default = [ ];
        example = [ "10.0.0.6:7946" ];
        description = "Members to join at start, \"host:port\" (over the tailnet: tailnet IPs, memberlist does not resolve MagicDNS names); retried until one answers. []: none, the agents join the server.";
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open bind's port (TCP and UDP) in the firewall. Not needed with tailscale.enable: gossip then runs inside the tailnet node, not on a host port.";
      };
    };

    store = {
      kind = mkOption {
        type = types.enum [ "bolt" "etcd" ];
        default = "bolt";
        description = ''
          Where the server keeps its state ([store] in server.toml): "bolt",
          one file in stateDir; or "etcd", an etcd v3 cluster (several
          servers on one prefix share it; see the README). Blobs stay in
          stateDir either way. The etcd options below are refused with
          "bolt".
        '';
      };

      endpoints = mkOption {
        type = types.listOf slipwayTypes.etcdEndpoint;
        default = [ ];
        example = [ "https://10.0.0.1:2379" "https://10.0.0.2:2379" "https://10.0.0.3:2379" ];
        description = "The etcd client URLs, \"http(s)://host:port\" (no path). Required with kind = \"etcd\".";
      };

      prefix = mkOption {
        type = slipwayTypes.etcdPrefix;
        default = "/slipway/";
        description = "The prefix of every key the server writes in etcd; it starts and ends with \"/\". Servers that share a fleet use the same prefix.";
      };

      caFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/etc/slipway/etcd-ca.pem";
        description = "CA certificates (PEM) etcd's certificate is verified against. null: the system's roots. Passed as a systemd credential (root-only is fine).";
      };

      certFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/etc/slipway/etcd-client.pem";
        description = "The client certificate (PEM) for etcd; set together with keyFile. Passed as a systemd credential.";
      };

      keyFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/run/keys/slipway-etcd-client.key";
        description = "The client certificate's key (PEM); set together with certFile. Passed as a systemd credential (root-only is fine); give a path, never the key.";
      };

      username = mkOption {
        type = types.nullOr (types.strMatching "[^[:space:]]+");
        default = null;
        example = "slipway";
        description = "The etcd user; set together with passwordFile.";
      };

      passwordFile = mkOption {
        type = types.nullOr slipwayTypes.absolutePath;
        default = null;
        example = "/run/keys/slipway-etcd-password";
        description = "A file holding the etcd user's password (trailing white space dropped). Passed as a systemd credential (root-only is fine); a Nix string would land in the world-readable Nix store.";
      };

      dialTimeout = mkOption {
        type = slipwayTypes.duration "100ms" "5m";
        default = "5s";
        description = "Bound on the first connection to etcd (a Go duration, 100ms to 5m).";
      };

      requestTimeout = mkOption {
        type = slipwayTypes.duration "100ms" "5m";
        default = "10s";
        description = "Bound on each request to etcd (a Go duration, 100ms to 5m).";
      };

      leaseTtl = mkOption {
        type = slipwayTypes.duration "2s" "5m";
        default = "10s";
        description = "The server's etcd lease (whole seconds, 2s to 5m): a server cut off from etcd this long loses what it holds through it.";
      };
    };

    extraConfig = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.bool (types.listOf types.str) ]);
      default = { };
      example = { some_new_key = "value"; };
      description = "More keys of /etc/slipway/server.toml, for settings that have no option here (a server newer than this module). They must be keys the server knows: it refuses to start on an unknown key. A key that has an option is refused: set the option.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = portOf cfg.listen >= 1024;
        message = "services.slipway.server.listen: port ${toString (portOf cfg.listen)} is below 1024, which the unit cannot bind (it has no capabilities)";
      }
      {
        assertion = !gossip.enable || ts.enable || portOf gossip.bind >= 1024;
        message = "services.slipway.server.gossip.bind: port ${toString (portOf gossip.bind)} is below 1024, which the unit cannot bind (it has no capabilities)";
      }
      {
        assertion = cfg.metricsListen != cfg.listen;
        message = "services.slipway.server.metricsListen: ${cfg.metricsListen} is the API's listen address; metrics need an address of their own";
      }
      {
        assertion = badTokenNames == [ ];
        message = "services.slipway.server.adminTokens: name ${builtins.toJSON badTokenNames} not 1 to 63 of [A-Za-z0-9._-] starting with a letter or digit";
      }
      {
        assertion = !ts.enable || badPrincipals == [ ];
        message = "services.slipway.server.tailscale.roles: ${builtins.toJSON badPrincipals}: want a user's login name (alice@example.com) or a tag (tag:ci)";
      }
      {
        assertion = shadowed == [ ];
        message = "services.slipway.server.extraConfig: ${builtins.toJSON shadowed} have options of their own: set those (they are checked), not extraConfig";
      }
      {
        assertion = hasPrefix "/var/lib/" cfg.stateDir;
        message = "services.slipway.server.stateDir must be under /var/lib (it is the unit's StateDirectory)";
      }
      {
        assertion = cfg.agentSocket == null || hasPrefix "/run/slipway-server/" cfg.agentSocket;
        message = "services.slipway.server.agentSocket must be under /run/slipway-server";
      }
      {
        assertion = !ts.enable || within cfg.stateDir tsStateDir || hasPrefix "/var/lib/" tsStateDir;
        message = "services.slipway.server.tailscale.stateDir must be inside stateDir or under /var/lib (the unit can write only its state directories)";
      }
      {
        assertion = !ts.enable || !(ts.roles ? ${ts.agentTag});
        message = "services.slipway.server.tailscale.roles: the agent tag ${ts.agentTag} cannot have an admin role: every agent would get it";
      }
      {
        assertion = !gossip.enable || ((gossip.keyringFile != null) != gossip.insecureNoEncryption);
        message = "services.slipway.server.gossip: set exactly one of keyringFile and insecureNoEncryption = true";
      }
      {
        assertion = !hostMode || tsnetOnlySet == [ ];
        message = "services.slipway.server.tailscale: ${builtins.toJSON tsnetOnlySet} are for mode = \"tsnet\" only; with mode = \"host\" the host's tailscaled is configured with `tailscale up` (services.tailscale)";
      }
      {
        assertion = !ts.enable || hostMode || ts.socket == null;
        message = "services.slipway.server.tailscale.socket is for mode = \"host\" only";
      }
      {
        assertion = !hostMode || portOf ts.listen >= 1024;
        message = "services.slipway.server.tailscale.listen: port ${toString (portOf ts.listen)} is below 1024, which the unit cannot bind on the host's tailnet address (it has no capabilities); e.g. \":7420\", with the agents' server = \"http://<name>:7420\"";
      }
      {
        assertion = !etcd || store.endpoints != [ ];
        message = "services.slipway.server.store.endpoints: required with kind = \"etcd\" (e.g. [ \"https://10.0.0.1:2379\" ])";
      }
      {
        assertion = etcd || etcdOnlySet == [ ];
        message = "services.slipway.server.store: ${builtins.toJSON etcdOnlySet} are for kind = \"etcd\" only";
      }
      {
        assertion = (store.certFile == null) == (store.keyFile == null);
        message = "services.slipway.server.store: set certFile and keyFile together (a client certificate) or neither";
      }
      {
        assertion = (store.username == null) == (store.passwordFile == null);
        message = "services.slipway.server.store: set username and passwordFile together or neither";
      }
      {
        assertion = leaseNs == null || lib.mod leaseNs 1000000000 == 0;
        message = "services.slipway.server.store.leaseTtl: ${store.leaseTtl}, want whole seconds (etcd leases are in seconds)";
      }
      {
        assertion = !(hostMode && gossip.enable) || portOf gossip.bind >= 1024;
        message = "services.slipway.server.gossip.bind: port ${toString (portOf gossip.bind)} is below 1024, which the unit cannot bind (it has no capabilities)";
      }
    ];

    warnings = optional (cfg.openFirewall && isLoopback cfg.listen)
      "services.slipway.server.openFirewall opens port ${toString (portOf cfg.listen)}, but listen (${cfg.listen}) is a loopback address: nothing outside reaches it"
      ++ optional (hostMode && !(config.services.tailscale.enable or false))
      "services.slipway.server.tailscale.mode = \"host\" uses the host's tailscaled, but services.tailscale.enable is not set: run tailscaled some other way, or enable it";

    environment.etc."slipway/server.toml".text = toml.toTOML fullSettings;

    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedTCPPorts = optional cfg.openFirewall (portOf cfg.listen) ++ optional gossipFirewall (portOf gossip.bind);
    networking.firewall.allowedUDPPorts = optional gossipFirewall (portOf gossip.bind);

    systemd.services.slipway-server = {
      description = "Slipway server: the coordinator of a Slipway fleet";
      documentation = [ "https://github.com/slipway-dev/slipway" ];
      wantedBy = [ "multi-user.target" ];
      # In host mode the server asks the host's tailscaled at start.
      wants = [ "network-online.target" ] ++ optional hostMode "tailscaled.service";
      after = [ "network-online.target" ] ++ optional hostMode "tailscaled.service";
      # A reload applies admin_token, log_level and tailscale.roles; any
      # other change of server.toml restarts the server.
      reloadTriggers = [ config.environment.etc."slipway/server.toml".text ];
      restartTriggers = [ (toml.toTOML restartSettings) ];
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
        LoadCredential = credentials;

        DynamicUser = true;
        StateDirectory = builtins.concatStringsSep " " (map (removePrefix "/var/lib/") stateDirs);
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
        # tsnet lists network interfaces over netlink (Go's net.Interfaces).
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ] ++ optional ts.enable "AF_NETLINK";
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
