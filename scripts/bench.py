#!/usr/bin/env python3
"""Benchmark mkkexec against squashfs-tools and the nixpkgs pipeline, in one run.

Builds a store-like tree from this machine's /usr (store paths named
<hash>-<dir>, with a registration), then times, on the same input:
  squashfs zstd-19   mkkexec squashfs        vs mksquashfs (make-squashfs.nix flags)
  squashfs xz        mkkexec --squashfs-compression xz vs mksquashfs -comp xz -Xdict-size 100%
  initrd             mkkexec initrd           vs echo img | cpio -o -H newc | zstd -19 -T0
  tree               mkkexec tree             vs mksquashfs + cpio + zstd (+ the stage 1 prepended)
  outer              the cpio around the squashfs (the initrd's second compression):
                     mkkexec initrd over our zstd-19 image with none, zstd 1/3/9/19,
                     gzip 9 and xz 6: time, bytes against none, and the time to
                     decompress it again (userland's decompressor, as the kernel does
                     at boot)
  rebuild            mkkexec tree --cache: a cold build with an empty cache, then one
                     store path changed (the smallest, then the largest: a byte
                     put before each of its files' bytes) and rebuilt with the warm cache,
                     vs the nixpkgs pipeline on the changed input (it has no cache);
                     each rebuild is checked byte-identical to one without the cache
and prints wall time, CPU time, peak RSS and output size, each the median of
--runs runs, with the ratios ours/theirs. Also the compression limit: the
CPU time zstd -19 alone needs for the input (1 MiB window) divided by the cores.
With --baseline BIN (another build of mkkexec, e.g. main's), the squashfs and
tree cases also time BIN, the runs of the three taking turns, and print ours
against it.

  scripts/bench.py --sizes 512,1024 --runs 3
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/lib"]
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def store_name(name):
    digest = hashlib.sha256(name.encode()).digest()
    return "".join(NIX32[b % 32] for b in digest[:32]) + "-" + "".join(
        c if c.isalnum() or c in "+-._?=" else "_" for c in name
    )[:100]


def nix32(digest):
    """Nix's base32: 5-bit groups from the end of the digest."""
    out = []
    for n in range((len(digest) * 8 - 1) // 5, -1, -1):
        b = n * 5
        i, j = b // 8, b % 8
        c = (digest[i] >> j) | (digest[i + 1] << (8 - j) if i + 1 < len(digest) else 0)
        out.append(NIX32[c & 0x1F])
    return "".join(out)


def nar_hash(path):
    """The NAR hash (sha256:<nix32>) and size of path, as Nix registers it;
    mkkexec refuses a closure whose hashes are not its store's."""
    h, size = hashlib.sha256(), 0

    def put(data):
        nonlocal size
        h.update(data)
        size += len(data)

    def s(b):
        put(len(b).to_bytes(8, "little") + b + b"\0" * (-len(b) % 8))

    def node(p):
        st = os.lstat(p)
        s(b"(")
        s(b"type")
        if os.path.islink(p):
            s(b"symlink")
            s(b"target")
            s(os.fsencode(os.readlink(p)))
        elif os.path.isdir(p):
            s(b"directory")
            for name in sorted(os.listdir(os.fsencode(p))):
                s(b"entry")
                s(b"(")
                s(b"name")
                s(name)
                s(b"node")
                node(os.path.join(os.fsencode(p), name))
                s(b")")
        else:
            s(b"regular")
            if st.st_mode & 0o100:
                s(b"executable")
                s(b"")
            s(b"contents")
            put(st.st_size.to_bytes(8, "little"))
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    put(chunk)
            put(b"\0" * (-st.st_size % 8))
        s(b")")

    s(b"nix-archive-1")
    node(os.fsencode(path))
    return "sha256:" + nix32(h.digest()), size


def du(path):
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def make_input(dest, size_mib):
    """Copy directories of /usr into dest/nix/store until size_mib is reached."""
    store = os.path.join(dest, "nix/store")
    # (-nar: earlier inputs were registered with made-up hashes.)
    reg = os.path.join(dest, "registration-nar")
    if os.path.exists(reg):
        return store, reg
    if os.path.exists(store):
        shutil.rmtree(store)
    os.makedirs(store, exist_ok=True)
    total, paths, seen = 0, [], set()
    for src in SOURCES:
        for entry in sorted(os.listdir(src)):
            full = os.path.join(src, entry)
            if not os.path.isdir(full) or os.path.islink(full) or full in SOURCES:
                continue
            name = store_name(f"{os.path.basename(src)}-{entry}")
            if name in seen:
                continue
            size = du(full)
            if size == 0 or size > 300 << 20:
                continue
            subprocess.run(["cp", "-a", "--no-preserve=ownership", full, os.path.join(store, name)], check=True)
            seen.add(name)
            paths.append((name, size))
            total += size
            if total >= size_mib << 20:
                break
        if total >= size_mib << 20:
            break
    with open(reg + ".tmp", "w") as f:
        for name, _ in sorted(paths):
            h, size = nar_hash(os.path.join(store, name))
            f.write(f"/nix/store/{name}\n{h}\n{size}\n\n0\n")
    os.rename(reg + ".tmp", reg)
    print(f"input: {len(paths)} store paths, {total / 2**20:.0f} MiB in {store}", file=sys.stderr)
    return store, reg


def changed_input(d, store, reg, name, dest):
    """A copy of the input at dest (hard links) where store path `name` is
    changed: a byte put before each of its files' bytes (every block of it
    changes), its registration updated."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    subprocess.run(["cp", "-al", os.path.join(d, "nix"), dest], check=True)
    path = os.path.join(dest, "nix/store", name)
    shutil.rmtree(path)
    subprocess.run(["cp", "-a", "--no-preserve=ownership", os.path.join(store, name), path], check=True)
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, mode | 0o200)
                # At the start: every block of the file changes, as in a new version.
                with open(p, "rb") as fh:
                    data = fh.read()
                with open(p, "wb") as fh:
                    fh.write(b"\n" + data)
                os.chmod(p, mode)
    lines = open(reg).read().split("\n")
    h, size = nar_hash(path)
    for i in range(0, len(lines) - 4, 5):
        if lines[i] == f"/nix/store/{name}":
            lines[i + 1], lines[i + 2] = h, str(size)
    new_reg = os.path.join(dest, "registration-nar")
    with open(new_reg, "w") as f:
        f.write("\n".join(lines))
    return os.path.join(dest, "nix/store"), new_reg


def timed(cmd, out):
    """Run a shell command; return (wall s, cpu s, peak RSS MiB, output bytes)."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    elif os.path.exists(out):
        os.unlink(out)
    subprocess.run(["sync"], check=True)
    stats = tempfile.NamedTemporaryFile(delete=False).name
    subprocess.run(["/usr/bin/time", "-o", stats, "-f", "%e %U %S %M", "sh", "-c", cmd], check=True,
                   stdout=subprocess.DEVNULL)
    wall, user, sys_, rss = open(stats).read().split()[-4:]
    os.unlink(stats)
    size = du(out) if os.path.isdir(out) else os.path.getsize(out)
    return float(wall), float(user) + float(sys_), int(rss) / 1024, size


def median_run(cmd, out, runs):
    return median_runs([(cmd, out)], runs)[0]


def median_runs(cases, runs):
    """Each (cmd, out) of cases, runs times, taking turns; the medians."""
    results = [[] for _ in cases]
    for _ in range(runs):
        for r, (cmd, out) in zip(results, cases):
            r.append(timed(cmd, out))
    return [tuple(statistics.median(x[i] for x in r) for i in range(4)) for r in results]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="512,1024", help="input sizes in MiB (comma-separated)")
    ap.add_argument("--runs", type=int, default=1, help="runs per measurement; the median is shown")
    ap.add_argument("--work", default=os.path.join(ROOT, "target/bench"), help="scratch directory")
    ap.add_argument("--only", default="", help="comma-separated subset: zstd,xz,initrd,tree,outer,rebuild,limit")
    ap.add_argument("--baseline", help="another mkkexec binary to time beside this build")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda k: not only or k in only

    mkkexec = os.path.join(ROOT, "target/release/mkkexec")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    cores = os.cpu_count()
    os.makedirs(args.work, exist_ok=True)
    stage1 = os.path.join(args.work, "stage1.gz")
    subprocess.run(f"cd {ROOT}/tests/fixture && echo stage1-init | cpio -o -H newc --quiet | gzip -9n > {stage1}",
                   shell=True, check=True)
    kernel = os.path.join(ROOT, ".cache/kernel/vmlinuz")
    if not os.path.exists(kernel):
        kernel = "/bin/busybox"  # any file stands in for the kernel here

    mk_flags = "-no-hardlinks -keep-as-directory -all-root -b 1048576 -root-mode 0755 -quiet -no-progress"
    rows, against, notes, outer = [], [], [], []

    def compare(name, ours, theirs, out):
        """ours (a command with {bin} and {out}) against theirs, and the baseline."""
        cases = [(ours.format(bin=mkkexec, out=out("ours")), out("ours")), (theirs, out("ref"))]
        if args.baseline:
            cases.append((ours.format(bin=args.baseline, out=out("base")), out("base")))
        r = median_runs(cases, args.runs)
        rows.append((name, r[0], r[1]))
        if args.baseline:
            against.append((name, r[0], r[2]))

    for size in [int(s) for s in args.sizes.split(",")]:
        d = os.path.join(args.work, f"input-{size}")
        store, reg = make_input(d, size)
        paths = " ".join(os.path.join(store, p) for p in sorted(os.listdir(store)))
        o = lambda n: os.path.join(d, n)
        # make-squashfs.nix puts the registration beside the store paths.
        shutil.copy(reg, o("nix-path-registration"))
        mksq = f"mksquashfs {o('nix-path-registration')} {paths} {{out}} {mk_flags} -processors {cores}"
        ours_sq = f"{{bin}} -q squashfs --closure {reg} --root {d} -o {{out}}"
        if want("zstd"):
            compare(f"{size} MiB squashfs zstd-19",
                    ours_sq + " --squashfs-compression zstd --squashfs-level 19",
                    mksq.format(out=o("ref.zstd")) + " -comp zstd -Xcompression-level 19",
                    lambda n: o(f"{n}.zstd"))
        if want("xz"):
            compare(f"{size} MiB squashfs xz", ours_sq + " --squashfs-compression xz",
                    mksq.format(out=o("ref.xz")) + " -comp xz -Xdict-size 100%", lambda n: o(f"{n}.xz"))
        if want("initrd"):
            img = o("ref.zstd")
            if not os.path.exists(img):
                subprocess.run(mksq.format(out=img) + " -comp zstd -Xcompression-level 3", shell=True, check=True)
            os.makedirs(o("initrd-in"), exist_ok=True)
            shutil.copy(img, o("initrd-in/nix-store.squashfs"))
            a = median_run(f"{mkkexec} -q initrd --file {img}:/nix-store.squashfs -o {o('ours.initrd')}",
                           o("ours.initrd"), args.runs)
            b = median_run(f"cd {o('initrd-in')} && find . | sort | cpio -o -H newc --quiet | zstd -19 -T0 -q > {o('ref.initrd')}",
                           o("ref.initrd"), args.runs)
            rows.append((f"{size} MiB initrd zstd-19", a, b))
        if want("tree"):
            pipeline = (f"mkdir -p {o('ref-tree')}/in && " + mksq.format(out=o("ref-tree") + "/in/nix-store.squashfs")
                        + " -comp zstd -Xcompression-level 19 && "
                        f"(cat {stage1}; cd {o('ref-tree')}/in && find . | sort | cpio -o -H newc --quiet | zstd -19 -T0 -q) "
                        f"> {o('ref-tree')}/initrd.gz && rm -r {o('ref-tree')}/in && cp {kernel} {o('ref-tree')}/bzImage")
            compare(f"{size} MiB tree (nixpkgs pipeline)",
                    f"{{bin}} -q tree --closure {reg} --root {d} --toplevel /nix/store/{sorted(os.listdir(store))[0]} "
                    f"--kernel {kernel} --prepend-initrd {stage1} -o {{out}}",
                    pipeline, lambda n: o(f"{n}-tree"))
        if want("outer"):
            img = o("outer.squashfs")
            subprocess.run((ours_sq + " --squashfs-compression zstd --squashfs-level 19").format(bin=mkkexec, out=img),
                           shell=True, check=True)
            base = None
            for comp, level, unpack in [("none", None, "cat"), ("zstd", 1, "zstd -dc"), ("zstd", 3, "zstd -dc"),
                                        ("zstd", 9, "zstd -dc"), ("zstd", 19, "zstd -dc"), ("gzip", 9, "gzip -dc"),
                                        ("xz", 6, "xz -dc")]:
                out = o(f"outer-{comp}{level or ''}.initrd")
                lv = f" --initrd-level {level}" if level else ""
                r = median_run(f"{mkkexec} -q initrd --file {img}:/nix-store.squashfs --initrd-compression {comp}{lv} "
                               f"-o {out}", out, args.runs)
                d_r = median_run(f"{unpack} {out} > {out}.cpio", f"{out}.cpio", args.runs)
                os.unlink(f"{out}.cpio")
                base = base or r
                outer.append((f"{size} MiB {comp}{' ' + str(level) if level else ''}", r, base, d_r))
        if want("rebuild"):
            cache = o("cache")
            if os.path.exists(cache):
                shutil.rmtree(cache)
            top = sorted(os.listdir(store))[0]
            tree_cmd = lambda dd, r, out, extra="": (
                f"{mkkexec} -q tree --closure {r} --root {dd} --toplevel /nix/store/{top} "
                f"--kernel {kernel} --prepend-initrd {stage1} -o {out}{extra}")
            cold = timed(tree_cmd(d, reg, o("cold-cache-tree"), f" --cache {cache}"), o("cold-cache-tree"))
            rows.append((f"{size} MiB tree cold, empty --cache", cold, None))
            sizes = {p: du(os.path.join(store, p)) for p in os.listdir(store)}
            for kind, name in [("small", min(sizes, key=sizes.get)), ("large", max(sizes, key=sizes.get))]:
                cd = o(f"changed-{kind}")
                cstore, creg = changed_input(d, store, reg, name, cd)
                cpaths = " ".join(os.path.join(cstore, p) for p in sorted(os.listdir(cstore)))
                shutil.copy(creg, os.path.join(cd, "nix-path-registration"))
                cmksq = (f"mksquashfs {os.path.join(cd, 'nix-path-registration')} {cpaths} {{out}} {mk_flags} "
                         f"-processors {cores}")
                ref_out = os.path.join(cd, "ref-tree")
                pipeline = (f"mkdir -p {ref_out}/in && " + cmksq.format(out=ref_out + "/in/nix-store.squashfs")
                            + " -comp zstd -Xcompression-level 19 && "
                            f"(cat {stage1}; cd {ref_out}/in && find . | sort | cpio -o -H newc --quiet | zstd -19 -T0 -q) "
                            f"> {ref_out}/initrd.gz && rm -r {ref_out}/in && cp {kernel} {ref_out}/bzImage")
                warm_out = os.path.join(cd, "warm-tree")
                warm, ref = median_runs([(tree_cmd(cd, creg, warm_out, f" --cache {cache}"), warm_out),
                                         (pipeline, ref_out)], args.runs)
                rows.append((f"{size} MiB rebuild, {kind} path changed ({sizes[name] / 2**20:.1f} MiB), warm cache "
                             f"(nixpkgs pipeline)", warm, ref))
                plain_out = os.path.join(cd, "plain-tree")
                timed(tree_cmd(cd, creg, plain_out), plain_out)
                same = all(open(os.path.join(warm_out, f), "rb").read() == open(os.path.join(plain_out, f), "rb").read()
                           for f in ["initrd.gz", "kexec-boot", "bzImage"])
                if not same:
                    sys.exit(f"{size} MiB rebuild ({kind}): the tree built with the cache differs from the one without")
                notes.append(f"{size} MiB rebuild, {kind} path changed: {warm[0]:.1f} s, {warm[0] / cold[0]:.3f}x our cold "
                             f"build ({cold[0]:.1f} s); byte-identical to the build without the cache")
        if want("limit"):
            r = timed(f"tar -C {d} -cf - nix | zstd -19 -T1 -q --zstd=wlog=20 > {o('limit.zst')}", o("limit.zst"))
            rows.append((f"{size} MiB limit: zstd-19 CPU / {cores} cores", (r[1] / cores, r[1], r[2], r[3]), None))

    print(f"\n| case | ours wall s | theirs wall s | wall ratio | ours CPU s | theirs CPU s | ours RSS MiB | theirs RSS MiB | RSS ratio | ours MB | theirs MB | size ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, a, b in rows:
        if b is None:
            print(f"| {name} | {a[0]:.1f} | | | {a[1]:.1f} | | {a[2]:.0f} | | | {a[3] / 1e6:.1f} | | |")
            continue
        print(f"| {name} | {a[0]:.1f} | {b[0]:.1f} | {a[0] / b[0]:.2f} | {a[1]:.1f} | {b[1]:.1f} | {a[2]:.0f} | {b[2]:.0f} "
              f"| {a[2] / b[2]:.2f} | {a[3] / 1e6:.1f} | {b[3] / 1e6:.1f} | {a[3] / b[3]:.3f} |")
    if outer:
        print("\n| the cpio around the squashfs | wall s | CPU s | RSS MiB | MB | bytes vs none | decompress wall s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r, base, d_r in outer:
            print(f"| {name} | {r[0]:.1f} | {r[1]:.1f} | {r[2]:.0f} | {r[3] / 1e6:.1f} | {r[3] / base[3]:.4f} | {d_r[0]:.2f} |")
    for n in notes:
        print(f"\n{n}")
    if against:
        print(f"\nAgainst the baseline {args.baseline}:\n")
        print("| case | ours wall s | baseline wall s | wall ratio | ours RSS MiB | baseline RSS MiB | RSS ratio | size ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, a, c in against:
            print(f"| {name} | {a[0]:.1f} | {c[0]:.1f} | {a[0] / c[0]:.3f} | {a[2]:.0f} | {c[2]:.0f} "
                  f"| {a[2] / c[2]:.3f} | {a[3] / c[3]:.4f} |")


if __name__ == "__main__":
    main()
