# carry_in ROOT [SRC [TYPE:PATH]...]: puts what kexec-boot carried from the
# old host (SRC, /nixos-kexec-carry in the initrd) into the system mounted at
# ROOT, in stage 1, before the switch to it, in this order:
#   ROOT/root/.ssh/authorized_keys    the keys that logged in as root
#   ROOT/etc/machine-id               the same machine-id (kexec-boot also
#                                     puts it on the kernel command line as
#                                     systemd.machine_id=, which systemd
#                                     takes when /etc cannot be written)
#   ROOT/PATH                         the host key of TYPE where sshd reads
#                                     it (services.openssh.hostKeys); with no
#                                     TYPE:PATH given, every carried key at
#                                     /etc/ssh/ssh_host_<type>_key
#   ROOT/var/lib/nixos-kexec/carried  everything, for the network unit
# Each item on its own: one that cannot be placed (a read-only /etc, as
# with an immutable /etc overlay) is said on stderr (the console) and the
# others are placed still; nothing here stops the caller's `set -e`.
# POSIX sh and coreutils only: systemd's stage 1 has no awk, grep or sed.
carry_in() {
  carry_root=$1
  carry_src=${2:-/nixos-kexec-carry}
  [ -d "$carry_src" ] || return 0
  if [ $# -ge 2 ]; then shift 2; else shift $#; fi

  # Every function below runs on the left of ||: `set -e` is off inside
  # them, and each step is chained with && so that the first failure ends
  # that item only.
  carry_keys "$carry_root" "$carry_src" ||
    carry_not "root's authorized SSH keys (/root/.ssh/authorized_keys): they cannot log in"
  if [ -s "$carry_src/machine-id" ]; then
    carry_machine_id "$carry_root" "$carry_src" ||
      carry_not "/etc/machine-id: systemd takes the machine-id from systemd.machine_id= on the kernel command line instead"
  fi
  carry_host_keys "$carry_root" "$carry_src" "$@" || :
  carry_state "$carry_root" "$carry_src" ||
    carry_not "the carried network (/var/lib/nixos-kexec/carried): the old host's addresses are not applied"
  if [ -s "$carry_src/notes" ]; then
    while IFS= read -r carry_line; do
      echo "nixos-kexec: not carried: $carry_line" >&2
    done <"$carry_src/notes" || :
  fi
  return 0
}

carry_not() {
  echo "nixos-kexec: could not place $*" >&2
}

carry_keys() {
  [ -s "$2/authorized_keys" ] || return 0
  carry_file=$1/root/.ssh/authorized_keys
  mkdir -p "$1/root/.ssh" &&
    chmod 700 "$1/root" "$1/root/.ssh" &&
    if [ -f "$carry_file" ]; then
      # A root that survived the kexec keeps its keys; none is listed twice.
      cat "$carry_file" "$2/authorized_keys" | sort -u >"$carry_file.new" &&
        mv "$carry_file.new" "$carry_file"
    else
      cp "$2/authorized_keys" "$carry_file"
    fi &&
    chmod 600 "$carry_file"
}

carry_machine_id() {
  cp "$2/machine-id" "$1/etc/machine-id" && chmod 444 "$1/etc/machine-id"
}

# carry_host_keys ROOT SRC [TYPE:PATH]...
carry_host_keys() {
  carry_hk_root=$1 carry_hk_src=$2
  shift 2
  carry_found=0
  for carry_k in "$carry_hk_src"/ssh/ssh_host_*_key; do
    [ -f "$carry_k" ] || continue
    carry_found=1
    carry_type=${carry_k##*/ssh_host_}
    carry_type=${carry_type%_key}
    if [ $# -eq 0 ]; then
      carry_path=/etc/ssh/ssh_host_${carry_type}_key
    else
      carry_path=
      for carry_pair in "$@"; do
        case $carry_pair in "$carry_type":*) carry_path=${carry_pair#*:} ;; esac
      done
      if [ -z "$carry_path" ]; then
        echo "nixos-kexec: the $carry_type host key is not placed: sshd reads none of that type (services.openssh.hostKeys)" >&2
        continue
      fi
    fi
    { mkdir -p "$carry_hk_root${carry_path%/*}" &&
      cp "$carry_k" "$carry_hk_root$carry_path" &&
      chmod 600 "$carry_hk_root$carry_path" &&
      if [ -f "$carry_k.pub" ]; then
        cp "$carry_k.pub" "$carry_hk_root$carry_path.pub" && chmod 644 "$carry_hk_root$carry_path.pub"
      fi; } ||
      carry_not "the $carry_type host key at $carry_path: clients will see a new host key"
  done
  [ "$carry_found" = 1 ] ||
    echo "nixos-kexec: no SSH host keys were carried: sshd makes new ones, and clients will see a new host key" >&2
}

carry_state() {
  mkdir -p "$1/var/lib/nixos-kexec" &&
    rm -rf "$1/var/lib/nixos-kexec/carried" &&
    cp -R "$2" "$1/var/lib/nixos-kexec/carried" &&
    chmod 700 "$1/var/lib/nixos-kexec/carried"
}
