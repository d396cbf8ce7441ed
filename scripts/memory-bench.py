#!/usr/bin/env python3
"""Measure the RAM a kexec image needs, with a real kernel: a benchmark, not a test.

For images of several sizes (the test fixture plus an incompressible payload
of --sizes MiB), and each initrd compression of --compressions, it finds by
bisection the smallest `qemu -m` (MiB, to --precision) at which
  direct  the tree boots directly (QEMU loads kernel and initrd) to the
          fixture's marker, and
  hop     the kexec hop boots to the marker: a busybox "foreign host" VM with
          the tarball unpacked at / runs nixos-kexec, whose own memory check
          is taken out so that the kernel decides; once with kexec_file_load
          and once with kexec_load (a wrapper refuses --kexec-file-syscall,
          so kexec-boot falls back as it does on such kernels),
and prints what kexec-boot would require for the same image. QEMU runs under
TCG with Debian's kernel (.cache/kernel), as the boot tests do.

  scripts/memory-bench.py --sizes 0,128 --compressions zstd,none

Needs what scripts/setup.sh installs; takes minutes per row (hours for all).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = os.path.join(ROOT, ".cache/kernel")
MARKER = "MKKEXEC-FIXTURE-BOOTED"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def nix_conf(work):
    """A Nix configuration as the tests use: sandboxed, offline, no daemon."""
    d = os.path.join(work, "nix-conf")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "registry.json"), "w") as f:
        f.write('{"flakes":[],"version":2}')
    with open(os.path.join(d, "nix.conf"), "w") as f:
        f.write(
            "build-users-group =\nsubstituters =\nexperimental-features = nix-command flakes\n"
            f"flake-registry = {d}/registry.json\nsandbox = true\n"
            "extra-sandbox-paths = /bin /usr /lib /lib64\nsandbox-fallback = false\n"
        )
    return d


def stage1(mkkexec, work):
    """The boot tests' stage-1 stand-in (tests/integration/boot.rs)."""
    out = os.path.join(work, "stage1.gz")
    cmd = [mkkexec, "initrd", "-q", "--initrd-compression", "gzip",
           "--file", "/bin/busybox:/bin/busybox",
           "--file", f"{ROOT}/tests/fixture/stage1-init:/init",
           "--file", f"{ROOT}/nix/carry-in.sh:/carry-in.sh"]
    for m in ["loop", "squashfs", "overlay"]:
        cmd += ["--file", f"{KERNEL}/modules/{m}.ko:/lib/modules/{m}.ko"]
    run(cmd + ["-o", out])
    return out


def build(conf, attr, args):
    cmd = ["nix-build", f"{ROOT}/tests/fixture/default.nix", "--no-out-link", "-A", attr]
    for k, v in args.items():
        cmd += ["--arg", k, v]
    return run(cmd, env={**os.environ, "NIX_CONF_DIR": conf}).strip().splitlines()[-1]


def qemu(mem, kernel, initrd, append, log):
    subprocess.run(
        ["timeout", "--kill-after=10", "900", "qemu-system-x86_64", "-accel", "tcg",
         "-m", str(mem), "-nodefaults", "-display", "none", "-monitor", "none",
         "-no-reboot", "-serial", f"file:{log}", "-kernel", kernel, "-initrd", initrd,
         "-append", append],
        stdin=subprocess.DEVNULL, check=False)
    with open(log, errors="replace") as f:
        return f.read()


def host_initrd(tarball, work, mode):
    """The boot tests' foreign host, with kexec-boot's memory check taken
    out; in `load` mode its kexec refuses kexec_file_load."""
    root = os.path.join(work, f"host-{mode}")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "etc"))
    shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
    shutil.copy(f"{ROOT}/tests/fixture/host-init", os.path.join(root, "init"))
    kexec = run(["sh", "-c", "command -v kexec"]).strip()
    run(["sh", "-c", f'for l in $(ldd "{kexec}" | grep -o "/[^ ]*"); do '
         f'mkdir -p {root}$(dirname $l) && cp -L $l {root}$l; done'])
    run(["tar", "-xzf", tarball, "-C", root])
    script = os.path.join(root, "nixos-kexec/kexec-boot")
    text = open(script).read()
    text, n = re.subn(r'if \[ "\$have_mib" -lt "\$need_mib" \]; then', "if false; then", text)
    assert n == 1, "kexec-boot's memory check not found"
    open(script, "w").write(text)
    if mode == "load":
        k = os.path.join(root, "nixos-kexec/kexec")
        os.rename(k, k + ".real")
        with open(k, "w") as f:
            f.write("#!/bin/busybox sh\nfor a; do [ \"$a\" = --kexec-file-syscall ] && "
                    "{ echo 'benchmark: kexec_file_load refused' >&2; exit 1; }; done\n"
                    'exec "$0.real" "$@"\n')
        os.chmod(k, 0o755)
    out = os.path.join(work, f"host-{mode}.cpio")
    run(["sh", "-c", f"cd {root} && find . | sort | cpio -o -H newc --quiet > {out}"])
    shutil.rmtree(root)
    return out


def bisect(boots, lo, hi, precision):
    """The smallest MiB in (lo, hi] at which boots(MiB) holds, to precision;
    None if it does not hold at hi."""
    if not boots(hi):
        return None
    while hi - lo > precision:
        mid = (lo + hi) // 2 // precision * precision
        if mid <= lo:
            break
        if boots(mid):
            hi = mid
        else:
            lo = mid
    return hi


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0,128,384,768", help="payload MiB (comma-separated)")
    ap.add_argument("--compressions", default="zstd,gzip,xz,none", help="initrd compressions")
    ap.add_argument("--modes", default="file,load", help="kexec syscalls for the hop")
    ap.add_argument("--precision", type=int, default=16, help="MiB")
    ap.add_argument("--max", type=int, default=4096, help="largest -m tried, MiB")
    ap.add_argument("--work", default=os.path.join(ROOT, "target/memory-bench"))
    args = ap.parse_args()

    os.makedirs(args.work, exist_ok=True)
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    mkkexec = os.path.join(ROOT, "target/release/mkkexec")
    conf = nix_conf(args.work)
    s1 = stage1(mkkexec, args.work)
    print("| payload MiB | squashfs MiB | initrd | initrd.gz MiB | direct min | "
          + " | ".join(f"hop {m} min" for m in args.modes.split(","))
          + " | kexec-boot asks | asks / hop min |")
    print("|---:|---:|---|---:|---:|" + "---:|" * len(args.modes.split(",")) + "---:|---:|")
    for size in [int(s) for s in args.sizes.split(",")]:
        for comp in args.compressions.split(","):
            nix_args = {
                "mkkexec": mkkexec, "kernel": f"{KERNEL}/vmlinuz", "initrd": s1,
                "kernelParams": '[ "console=ttyS0" "panic=-1" ]',
                "squashfsCompression": '"zstd"', "initrdCompression": f'"{comp}"',
                "payloadMiB": str(size), "kexec": run(["sh", "-c", "command -v kexec"]).strip(),
            }
            tree = build(conf, "tree", nix_args)
            toplevel = build(conf, "toplevel", nix_args)
            tarball = os.path.join(build(conf, "tarball", nix_args),
                                   "tarball/nixos-system-x86_64-linux.tar.gz")
            script = open(os.path.join(tree, "kexec-boot")).read()
            initrd_bytes = int(re.search(r"^initrd_bytes=(\d+)", script, re.M).group(1))
            unpacked = int(re.search(r"^unpacked_bytes=(\d+)", script, re.M).group(1))
            asks = (initrd_bytes + 2 * unpacked) // 2**20 + 256
            log = os.path.join(args.work, "serial.log")

            def direct(mem):
                text = qemu(mem, f"{tree}/bzImage", f"{tree}/initrd.gz",
                            f"console=ttyS0 panic=-1 quiet init={toplevel}/init", log)
                ok = MARKER in text
                print(f"  direct {size} MiB {comp} -m {mem}: {'boots' if ok else 'fails'}", file=sys.stderr)
                return ok

            hops = []
            for mode in args.modes.split(","):
                host = host_initrd(tarball, args.work, mode)

                def hop(mem, host=host, mode=mode):
                    text = qemu(mem, f"{KERNEL}/vmlinuz", host, "console=ttyS0 panic=-1 quiet", log)
                    ok = MARKER in text and "HOST-STAYED-UP" not in text
                    print(f"  hop {mode} {size} MiB {comp} -m {mem}: {'boots' if ok else 'fails'}", file=sys.stderr)
                    return ok

                hops.append(bisect(hop, 64, args.max, args.precision))
            d = bisect(direct, 64, args.max, args.precision)
            worst = max((h for h in hops if h), default=None)
            # What the kernel unpacks: the squashfs (the stage-1 stand-in is
            # a few KiB).
            squashfs = unpacked
            ratio = f"{asks / worst:.2f}" if worst else "n/a"
            print(f"| {size} | {squashfs / 2**20:.0f} | {comp} | {initrd_bytes / 2**20:.0f} | {d} | "
                  + " | ".join(str(h) for h in hops) + f" | {asks} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
