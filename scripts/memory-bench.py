#!/usr/bin/env python3
"""Measure the RAM a kexec image needs, with a real kernel: a benchmark, not a test.

For each image of --rows (the test fixture plus an incompressible payload of
SIZE MiB, an initrd compression, and the new kernel's rootfs: a tmpfs, or a
ramfs with rootfstype=ramfs on its command line) it finds, for each of
--columns, the smallest `qemu -m` (MiB, to --precision; from a first guess
outwards, then by bisection):
  direct      the tree boots directly (QEMU loads kernel and initrd) to the
              fixture's marker;
  HOST MODE   the kexec hop boots to the marker: a busybox "foreign host" VM
              runs nixos-kexec from the unpacked tarball, with kexec-boot's
              memory checks taken out so that the kernels decide. MODE
              `file` is kexec_file_load, `load` kexec_load (a wrapper refuses
              --kexec-file-syscall, so kexec-boot falls back as it does on
              such kernels). HOST `disk` is a rented server's shape: the
              tarball on an ext4 virtio disk, TMPDIR there
              (tests/fixture/host-init-disk); `ram` a rescue system's: all in
              the initramfs (tests/fixture/host-init);
  HOST asks   the smallest -m at which the real kexec-boot (checks intact)
              goes ahead, with what then happens: the boot must reach the
              marker, or a later check refuse with the host up; never a
              lost machine.
For each minimum it also prints why the boot one step below failed. QEMU
runs under TCG with Debian's kernel (.cache/kernel), as the boot tests do,
--jobs VMs at a time.

  scripts/memory-bench.py --rows "0,128:zstd:tmpfs,ramfs" --columns "direct,disk file,disk asks"

Needs what scripts/setup.sh installs; minutes per row, about an hour for the
default matrix (README, "Memory").
"""

import argparse
import concurrent.futures
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


def qemu(mem, kernel, initrd, append, log, disk=None):
    cmd = ["timeout", "--kill-after=10", "900", "qemu-system-x86_64", "-accel", "tcg",
           "-m", str(mem), "-nodefaults", "-display", "none", "-monitor", "none",
           "-no-reboot", "-serial", f"file:{log}", "-kernel", kernel, "-initrd", initrd,
           "-append", append]
    if disk:
        # -snapshot: each boot writes to a throw-away overlay, the image stays.
        cmd += ["-snapshot", "-drive", f"file={disk},format=raw,if=virtio"]
    subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False)
    with open(log, errors="replace") as f:
        return f.read()


def outcome(text, hop):
    """What a boot's serial log says happened (`hop`: a host ran first)."""
    if MARKER in text and "HOST-STAYED-UP" not in text:
        return "boots"
    if hop:
        up = text.find("HOST-UP")
        if up < 0 or "Initramfs unpacking failed" in text[:up] or "HOST-STAYED-UP rc=127" in text:
            return "the host itself did not boot"
    said = [line[len("kexec-boot: "):] for line in text.splitlines()
            if line.startswith("kexec-boot: ") and not line.startswith("kexec-boot: warning")]
    failed = [line for line in said if "failed" in line] or said
    if "HOST-STAYED-UP rc=1" in text and failed and not any(
            n in text for n in ("not enough memory", "not enough free memory", "could write only")):
        return "refused: " + failed[-1][:70]
    for needle, what in [
        ("not enough free memory", "refused by kexec-boot's free-memory check"),
        ("not enough memory", "refused by kexec-boot's memory check"),
        ("could write only", "refused: the assembled initrd did not fit"),
        ("HOST-STAYED-UP", "kexec failed, host up"),
        ("Initramfs unpacking failed", "new kernel: initramfs unpacking failed"),
        ("Out of memory", "out of memory"),
        ("Kernel panic", "kernel panic"),
    ]:
        if needle in text:
            return what
    return "no marker (lost)"


def host(tarball, work, tag, kind, mode, check):
    """The foreign host as (initrd, disk image or None): busybox and
    Debian's kexec, the tarball in the initramfs (`ram`) or on an ext4
    disk (`disk`); kexec-boot's memory check taken out unless `check`; in
    `load` mode its kexec refuses kexec_file_load."""
    name = f"host-{tag}-{kind}-{mode}-{'check' if check else 'nocheck'}"
    root = os.path.join(work, name)
    tree = os.path.join(work, name + "-tree")
    for d in (root, tree):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "etc"))
    os.makedirs(os.path.join(tree, "tmp"))
    shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
    kexec = run(["sh", "-c", "command -v kexec"]).strip()
    run(["sh", "-c", f'for l in $(ldd "{kexec}" | grep -o "/[^ ]*"); do '
         f'mkdir -p {root}$(dirname $l) && cp -L $l {root}$l; done'])
    run(["tar", "-xzf", tarball, "-C", tree])
    script = os.path.join(tree, "nixos-kexec/kexec-boot")
    text = open(script).read()
    if not check:
        for check_re, off in [(r'if \[ "\$have_mib" -lt "\$need_mib" \]; then', "if false; then"),
                              (r'\[ "\$avail_mib" -ge "\$copy_mib" \] \|\|', "true ||")]:
            text, n = re.subn(check_re, off, text)
            assert n == 1, f"kexec-boot's memory check {check_re} not found"
    open(script, "w").write(text)
    if mode == "load":
        k = os.path.join(tree, "nixos-kexec/kexec")
        os.rename(k, k + ".real")
        with open(k, "w") as f:
            f.write("#!/bin/busybox sh\nfor a; do [ \"$a\" = --kexec-file-syscall ] && "
                    "{ echo 'benchmark: kexec_file_load refused' >&2; exit 1; }; done\n"
                    'exec "$0.real" "$@"\n')
        os.chmod(k, 0o755)
    disk = None
    if kind == "ram":
        shutil.copy(f"{ROOT}/tests/fixture/host-init", os.path.join(root, "init"))
        run(["sh", "-c", f"cd {tree} && tar -cf - . | tar -xf - -C {root}"])
    else:
        shutil.copy(f"{ROOT}/tests/fixture/host-init-disk", os.path.join(root, "init"))
        mods = os.path.join(root, "lib/modules")
        os.makedirs(mods)
        order = open(f"{KERNEL}/modules/disk.order").read().split()
        for m in order:
            shutil.copy(f"{KERNEL}/modules/{m}.ko", mods)
        shutil.copy(f"{KERNEL}/modules/disk.order", mods)
        used = int(run(["du", "-sm", tree]).split()[0])
        disk = os.path.join(work, name + ".ext4")
        if os.path.exists(disk):
            os.remove(disk)
        # Room for the assembled initrd beside the tree.
        run(["mke2fs", "-q", "-t", "ext4", "-d", tree, disk, f"{2 * used + 256}M"])
    out = os.path.join(work, name + ".cpio")
    run(["sh", "-c", f"cd {root} && find . | sort | cpio -o -H newc --quiet > {out}"])
    shutil.rmtree(root)
    shutil.rmtree(tree)
    return out, disk


def smallest(holds, guess, precision, lo_bound, hi_bound):
    """The smallest MiB (a multiple of precision) in (lo_bound, hi_bound] at
    which holds(MiB), searched from guess outwards and then by bisection
    (holds must be monotonic); with the MiB just below it that did not
    hold (or None). (None, None) if it does not hold at hi_bound."""
    seen = {}

    def t(m):
        if m not in seen:
            seen[m] = holds(m)
        return seen[m]

    g = min(max(-(-guess // precision) * precision, lo_bound + precision), hi_bound)
    step = 4 * precision
    if t(g):
        hi, lo = g, g - step
        while lo > lo_bound and t(lo):
            hi, step = lo, step * 2
            lo = hi - step
        lo = max(lo, lo_bound)
    else:
        lo = g
        while True:
            hi = min(lo + step, hi_bound)
            if t(hi):
                break
            if hi == hi_bound:
                return None, None
            lo, step = hi, step * 2
    while hi - lo > precision:
        mid = (lo + hi) // 2 // precision * precision
        if mid <= lo:
            break
        if t(mid):
            hi = mid
        else:
            lo = mid
    below = max((m for m, ok in seen.items() if not ok and m < hi), default=None)
    return hi, below


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="0,128,384,768:zstd:tmpfs,ramfs 384:gzip,xz,none:ramfs",
                    help="images: space-separated SIZES:COMPRESSIONS:ROOTFS, each a comma "
                         "list (payload MiB; initrd compressions; the new kernel's rootfs, "
                         "tmpfs or ramfs = rootfstype=ramfs on its command line)")
    ap.add_argument("--columns", default="direct,disk file,disk load,disk asks,ram asks",
                    help="direct; HOST MODE (hosts disk, ram; modes file, load); HOST asks")
    ap.add_argument("--precision", type=int, default=16, help="MiB")
    ap.add_argument("--max", type=int, default=6144, help="largest -m tried, MiB")
    ap.add_argument("--jobs", type=int, default=2, help="VMs at a time")
    ap.add_argument("--work", default=os.path.join(ROOT, "target/memory-bench"))
    args = ap.parse_args()

    os.makedirs(args.work, exist_ok=True)
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    mkkexec = os.path.join(ROOT, "target/release/mkkexec")
    conf = nix_conf(args.work)
    s1 = stage1(mkkexec, args.work)
    columns = args.columns.split(",")
    rows = []
    for spec in args.rows.split():
        sizes, comps, rootfses = (part.split(",") for part in spec.split(":"))
        rows += [(int(a), b, c) for a in sizes for b in comps for c in rootfses]
    print("| payload | squashfs | initrd | initrd.gz | rootfs | " + " | ".join(columns) + " |")
    print("|---:|---:|---|---:|---|" + "---:|" * len(columns))
    why = {}
    pool = concurrent.futures.ThreadPoolExecutor(args.jobs)
    for size, comp, rootfs in rows:
        ramfs = ' "rootfstype=ramfs"' if rootfs == "ramfs" else ""
        nix_args = {
            "mkkexec": mkkexec, "kernel": f"{KERNEL}/vmlinuz", "initrd": s1,
            "kernelParams": f'[ "console=ttyS0" "panic=-1"{ramfs} ]',
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
        copies = 1 if ramfs else 2
        guess = (initrd_bytes + copies * unpacked) // 2**20 + 96
        label = f"{size} MiB {comp} {rootfs}"

        def measure(column):
            log = os.path.join(args.work, f"serial-{column.replace(' ', '-')}.log")
            g = guess
            if column == "direct":
                def boot(mem):
                    return qemu(mem, f"{tree}/bzImage", f"{tree}/initrd.gz",
                                f"console=ttyS0 panic=-1 quiet{ramfs and ' rootfstype=ramfs'} init={toplevel}/init", log)
                holds = "boots"
            else:
                kind, mode = column.split()
                check = mode == "asks"
                initrd, disk = host(tarball, args.work, f"{size}-{comp}-{rootfs}", kind,
                                    "file" if check else mode, check)

                def boot(mem, initrd=initrd, disk=disk):
                    return qemu(mem, f"{KERNEL}/vmlinuz", initrd,
                                "console=ttyS0 panic=-1 quiet", log, disk)
                g = guess if kind == "disk" else guess * 5 // 3
                holds = None if check else "boots"
            seen = {}

            def ok(mem):
                o = outcome(boot(mem), column != "direct")
                seen[mem] = o
                print(f"  {label} {column} -m {mem}: {o}", file=sys.stderr, flush=True)
                # asks: the host is up and kexec-boot's memory checks let it go ahead.
                return o == holds if holds else "memory check" not in o and "itself" not in o
            m, below = smallest(ok, g, args.precision, 64, args.max)
            at = seen.get(m)
            why[(label, column)] = (m, at, below, seen.get(below))
            if holds is None and at != "boots":
                return f"{m} ({at})"
            return str(m)

        cells = list(pool.map(measure, columns))
        print(f"| {size} | {unpacked / 2**20:.0f} | {comp} | {initrd_bytes / 2**20:.0f} | {rootfs} | "
              + " | ".join(cells) + " |", flush=True)
    print("\nOne step below each minimum:")
    for (label, column), (m, at, below, reason) in why.items():
        print(f"- {label}, {column}: {m} ({at}); {below}: {reason}")


if __name__ == "__main__":
    main()
