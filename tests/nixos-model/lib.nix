# nixpkgs' real lib (../shared/nixpkgs-lib/lib, see its SOURCE.md) with the
# one shim Debian's Nix 2.8 needs: lib.filesystem.pathType (and so
# lib.fileset) calls builtins.readFileType, which came with Nix 2.14. The
# shim reads the parent directory instead, which gives the same answer,
# except for a top-level store path, whose parent pure evaluation may not
# read: it is taken for a directory (a flake's source, a fileset's root).
{ libPath }:
(import libPath).extend (
  final: prev: {
    filesystem = prev.filesystem // {
      pathType =
        builtins.readFileType or (
          path:
          let
            name = baseNameOf path;
          in
          if name == "" || dirOf (toString path) == builtins.storeDir then
            "directory"
          else
            (builtins.readDir (dirOf path)).${name}
        );
    };
  }
)
