# A small TOML renderer in plain Nix (builtins only), so that the generated
# /etc/slipway/*.toml is the same text whether nixpkgs' lib is at hand or not
# (nixos-module/test evaluates the modules without nixpkgs).
#
# Values: strings, integers, booleans, lists of those, attribute sets of
# those (rendered as [tables]) and lists of attribute sets ([[arrays of
# tables]]). Attributes whose value is null are left out: the daemon's
# default applies. Keys are always quoted, so "role/tier" or "a.b" are one
# key each.
let
  inherit (builtins) attrNames concatStringsSep filter isAttrs isBool isInt isList isString length map toJSON typeOf all;

  key = k: toJSON k;

  scalar = v:
    if isString v then toJSON v # JSON string escapes are valid TOML basic-string escapes
    else if isBool v then (if v then "true" else "false")
    else if isInt v then toString v
    else if isList v then "[" + concatStringsSep ", " (map scalar v) + "]"
    else throw "toml.nix: cannot render a ${typeOf v} as a TOML value";

  isTable = v: isAttrs v;
  isTableArray = v: isList v && v != [ ] && all isAttrs v;

  # render prefix attrs: the key = value lines of attrs, then its tables.
  render = prefix: attrs:
    let
      names = filter (n: attrs.${n} != null) (attrNames attrs);
      plain = filter (n: !(isTable attrs.${n}) && !(isTableArray attrs.${n})) names;
      tables = filter (n: isTable attrs.${n}) names;
      arrays = filter (n: isTableArray attrs.${n}) names;
      path = n: (if prefix == "" then "" else prefix + ".") + key n;
      lines = map (n: "${key n} = ${scalar attrs.${n}}\n") plain;
      tableText = map (n: "\n[${path n}]\n" + render (path n) attrs.${n}) tables;
      arrayText = map (n: concatStringsSep "" (map (t: "\n[[${path n}]]\n" + render (path n) t) attrs.${n})) arrays;
    in
    concatStringsSep "" (lines ++ tableText ++ arrayText);
in
{
  # toTOML attrs: the TOML document of attrs.
  toTOML = attrs: render "" attrs;
}
