# carry_in ROOT [SRC]: puts what kexec-boot carried from the old host
# (SRC, /nixos-kexec-carry in the initrd) into the system mounted at ROOT, in
# stage 1, before the switch to it:
#   ROOT/var/lib/nixos-kexec/carried  everything, for the network unit
#   ROOT/etc/ssh/ssh_host_*           the host keys: the same host key
#   ROOT/root/.ssh/authorized_keys    the keys that logged in as root
#   ROOT/etc/machine-id               the same machine-id
# POSIX sh and coreutils only: systemd's stage 1 has no awk, grep or sed.
carry_in() {
  root=$1
  src=${2:-/nixos-kexec-carry}
  [ -d "$src" ] || return 0
  mkdir -p "$root/var/lib/nixos-kexec"
  rm -rf "$root/var/lib/nixos-kexec/carried"
  cp -R "$src" "$root/var/lib/nixos-kexec/carried"
  chmod 700 "$root/var/lib/nixos-kexec/carried"

  mkdir -p "$root/etc/ssh"
  keys=0
  for k in "$src"/ssh/ssh_host_*_key; do
    [ -f "$k" ] || continue
    cp "$k" "$root/etc/ssh/"
    chmod 600 "$root/etc/ssh/${k##*/}"
    if [ -f "$k.pub" ]; then
      cp "$k.pub" "$root/etc/ssh/"
      chmod 644 "$root/etc/ssh/${k##*/}.pub"
    fi
    keys=$((keys + 1))
  done
  [ "$keys" -gt 0 ] ||
    echo "nixos-kexec: no SSH host keys were carried: sshd makes new ones, and clients will see a new host key" >&2

  if [ -s "$src/authorized_keys" ]; then
    mkdir -p "$root/root/.ssh"
    chmod 700 "$root/root" "$root/root/.ssh"
    keys_file=$root/root/.ssh/authorized_keys
    if [ -f "$keys_file" ]; then
      # A root that survived the kexec keeps its keys; none is listed twice.
      cat "$keys_file" "$src/authorized_keys" | sort -u >"$keys_file.new"
      mv "$keys_file.new" "$keys_file"
    else
      cp "$src/authorized_keys" "$keys_file"
    fi
    chmod 600 "$keys_file"
  fi

  if [ -s "$src/machine-id" ]; then
    cp "$src/machine-id" "$root/etc/machine-id"
    chmod 444 "$root/etc/machine-id"
  fi
  if [ -s "$src/notes" ]; then
    while IFS= read -r line; do
      echo "nixos-kexec: not carried: $line" >&2
    done <"$src/notes"
  fi
}
