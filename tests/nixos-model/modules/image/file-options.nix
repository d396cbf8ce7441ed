# Model of nixpkgs' nixos/modules/image/file-options.nix.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
in
{
  options.image = {
    baseName = mkOption {
      type = types.str;
      default = "nixos-image-${config.system.nixos.label}-${pkgs.stdenv.hostPlatform.system}";
    };
    extension = mkOption { type = types.str; };
    fileName = mkOption {
      type = types.str;
      default = "${config.image.baseName}.${config.image.extension}";
    };
    filePath = mkOption {
      type = types.str;
      default = config.image.fileName;
    };
  };
}
