# A minimal stand-in for nixpkgs' lib and the NixOS module system, enough to
# evaluate nixos-module/*.nix without nixpkgs (which is not available
# offline). Builtins only.
#
# It implements: mkOption, mkEnableOption, mkIf, mkMerge, mkDefault,
# mkForce, types (bool str int package enum nullOr listOf attrsOf oneOf
# submodule), literalExpression, and the few list/string helpers the
# modules use, with nixpkgs' semantics for what the modules rely on:
# definitions are merged by priority (option defaults < mkDefault < plain <
# mkForce), lists concatenate, attribute sets merge, mkIf conditions are
# evaluated lazily at the leaves (as lib's pushDownProperties does, so a
# module's `config = mkIf cfg.enable …` does not recurse), option values
# are type-checked, submodules get their defaults.
#
# What it does not model: the option declarations of NixOS itself
# (systemd.services.*, environment.etc.*, …): those are merged free-form
# here, without their types; and everything nixpkgs' lib has beyond the
# above.
let
  inherit (builtins) all any attrNames attrValues concatMap concatStringsSep elem filter foldl' genList head isAttrs isBool isFunction isInt isList isPath isString length listToAttrs mapAttrs stringLength substring tail typeOf;

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  hasPrefix = p: s: substring 0 (stringLength p) s == p;
  hasSuffix = sfx: s: let n = stringLength s; m = stringLength sfx; in n >= m && substring (n - m) m s == sfx;
  showPath = concatStringsSep ".";

  mkType = name: check: extra: { _type = "type"; inherit name check; } // extra;

  types = rec {
    bool = mkType "bool" isBool { };
    str = mkType "str" isString { };
    int = mkType "int" isInt { };
    package = mkType "package" (v: isString v || isPath v || (isAttrs v && v ? outPath)) { };
    enum = vs: mkType "one of ${concatStringsSep ", " (map toString vs)}" (v: elem v vs) { };
    nullOr = t: mkType "null or ${t.name}" (v: v == null || t.check v) { kind = "nullOr"; sub = t; };
    listOf = t: mkType "list of ${t.name}" (v: isList v && all t.check v) { kind = "list"; sub = t; };
    attrsOf = t: mkType "attribute set of ${t.name}" (v: isAttrs v && all t.check (attrValues v)) { kind = "attrs"; sub = t; };
    oneOf = ts: mkType "one of (${concatStringsSep ", " (map (t: t.name) ts)})" (v: any (t: t.check v) ts) { };
    submodule = m:
      let mod = if isFunction m then m { name = "<name>"; lib = self; } else m;
      in mkType "submodule" isAttrs { kind = "submodule"; options = mod.options; };
  };

  isOption = v: isAttrs v && (v._type or null) == "option";

  self = {
    inherit types genAttrs hasPrefix hasSuffix unique;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: self.mkOption { type = types.bool; default = false; example = true; description = "Whether to enable ${name}."; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkOverride = priority: content: { _type = "override"; inherit priority content; };
    mkDefault = self.mkOverride 1000;
    mkForce = self.mkOverride 50;
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    mapAttrsToList = f: attrs: map (n: f n attrs.${n}) (attrNames attrs);
    removePrefix = p: s: if hasPrefix p s then substring (stringLength p) (stringLength s) s else s;
    splitString = sep: s: filter isString (builtins.split sep s);
    last = l: builtins.elemAt l (length l - 1);
    toInt = s: builtins.fromJSON s;
    optional = c: x: if c then [ x ] else [ ];
    optionalAttrs = c: a: if c then a else { };
    cleanSourceWith = { src, filter, ... }: src;
    platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
    licenses = { };
  };

  # evalModules { modules, pkgs } → { config, options, undocumented }.
  evalModules = { modules, pkgs, specialArgs ? { } }:
    let
      args = { inherit config pkgs; lib = self; options = allOptions; } // specialArgs;

      load = m:
        let
          v = if isPath m || isString m then import m else m;
          r = if isFunction v then v args else v;
          structured = r ? options || r ? config;
        in
        [{
          options = r.options or { };
          config = if structured then r.config or { } else removeAttrs r [ "imports" ];
        }] ++ concatMap load (r.imports or [ ]);
      mods = concatMap load modules;

      mergeOptions = a: b:
        if isOption a || isOption b then throw "stub: option declared twice"
        else a // mapAttrs (n: v: if a ? ${n} then mergeOptions a.${n} v else v) b;
      allOptions = foldl' mergeOptions { } (map (m: m.options) mods);

      # The definitions at path inside d: [{ conds, prio, value }], with
      # properties pushed down and their conditions not yet evaluated.
      at = path: conds: prio: d:
        if isAttrs d && d ? _type && d._type == "if" then at path (conds ++ [ d.condition ]) prio d.content
        else if isAttrs d && d ? _type && d._type == "merge" then concatMap (at path conds prio) d.contents
        else if isAttrs d && d ? _type && d._type == "override" then at path conds d.priority d.content
        else if path == [ ] then [{ inherit conds prio; value = d; }]
        else if isAttrs d && !(d ? _type) && d ? ${head path} then at (tail path) conds prio d.${head path}
        else [ ];
      defsAt = path: concatMap (m: at path [ ] 100 m.config) mods;
      active = defs: filter (d: all (c: c) d.conds) defs;
      topPrio = defs:
        let p = foldl' (a: d: if d.prio < a then d.prio else a) 10000 defs;
        in filter (d: d.prio == p) defs;

      mergeValues = path: vs:
        if all isList vs then concatMap (v: v) vs
        else if all (v: isAttrs v && !(v ? outPath)) vs then foldl' (a: b: a // b) { } vs
        else if all (v: v == head vs) vs then head vs
        else throw "stub: conflicting definitions of ${showPath path}";

      fill = path: type: v:
        if (type.kind or "") == "submodule" then
          let extra = filter (n: !(type.options ? ${n})) (attrNames v); in
          if extra != [ ] then throw "stub: ${showPath path}: no such option(s): ${concatStringsSep ", " extra}"
          else mapAttrs
            (n: o: check (path ++ [ n ]) o.type (fill (path ++ [ n ]) o.type (
              if v ? ${n} then v.${n} else if o ? default then o.default
              else throw "stub: option ${showPath (path ++ [ n ])} is used but not defined")))
            type.options
        else if (type.kind or "") == "attrs" then mapAttrs (n: x: fill (path ++ [ n ]) type.sub x) v
        else if (type.kind or "") == "list" then map (fill path type.sub) v
        else if (type.kind or "") == "nullOr" then (if v == null then null else fill path type.sub v)
        else v;

      check = path: type: v:
        if type.check v then v
        else throw "stub: option ${showPath path}: ${typeOf v} value is not of type ${type.name}";

      optionValue = path: opt:
        let
          defs = topPrio (active (defsAt path));
          raw =
            if defs == [ ] then
              (if opt ? default then opt.default else throw "stub: option ${showPath path} is used but not defined")
            else mergeValues path (map (d: d.value) defs);
        in
        check path opt.type (fill path opt.type raw);

      build = path: opts:
        if isOption opts then optionValue path opts
        else
          let
            defs = defsAt path;
            isTree = v: isAttrs v && !(v ? _type) && !(v ? outPath);
            # Free-form keys with no active definition are left out, below
            # the root only (the root's keys must not depend on config).
            defKeys = unique (concatMap (d: if isTree d.value then attrNames d.value else [ ]) defs);
            hasActive = k: any (d: all (c: c) d.conds) (defsAt (path ++ [ k ]));
            keys = unique (attrNames opts ++ filter (k: opts ? ${k} || path == [ ] || hasActive k) defKeys);
            leaf = opts == { } && defs != [ ] && !(any (d: isTree d.value) defs);
          in
          if leaf then
            (let a = topPrio (active defs); in if a == [ ] then null else mergeValues path (map (d: d.value) a))
          else genAttrs keys (k: build (path ++ [ k ]) (opts.${k} or { }));

      config = build [ ] allOptions;

      # Every option (and sub-option) without a description.
      undocumented = path: opts:
        if isOption opts then
          (if (opts.description or "") == "" then [ (showPath path) ] else [ ])
          ++ (if (opts.type.kind or "") == "submodule" then undocumented (path ++ [ "<name>" ]) opts.type.options
          else if (opts.type.sub.kind or "") == "submodule" then undocumented (path ++ [ "<name>" ]) opts.type.sub.options
          else [ ])
        else concatMap (n: undocumented (path ++ [ n ]) opts.${n}) (attrNames opts);
    in
    {
      inherit config;
      options = allOptions;
      undocumented = undocumented [ ] allOptions;
    };
in
{
  lib = self;
  inherit evalModules;
}
