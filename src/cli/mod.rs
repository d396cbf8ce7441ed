//! The command line. Flag names are the interface the Nix module and the
//! tests use.

use camino::Utf8PathBuf;
use clap::{Args, Parser, Subcommand};

mod inspect;
mod run;
mod verify;

pub use run::run;

use crate::initrd::{FileSpec, InitrdCompression};
use crate::level;
use crate::squashfs::{DEFAULT_BLOCK_SIZE, SquashfsCompression};

/// The error and its causes, joined by `: ` as `{e:#}` joins them, each
/// said once: a cause the message before it already ends with is left out.
/// Libraries that print their source inside their own message (a `#[from]`
/// field shown with `{0}`) would otherwise say it twice.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || last.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}

#[derive(Parser, Debug)]
#[command(
    name = "mkkexec",
    version,
    about = "Turn a NixOS closure into a kexec-bootable kernel + initrd + script",
    long_about = "mkkexec builds what `kexec` needs to boot a NixOS system from a running Linux: \
a squashfs of the Nix store, an initrd that carries it after NixOS' stage 1, the kexec-boot \
script and a tarball for hosts without Nix.\n\n\
The closure is read from a closureInfo directory, a registration file \
(nix-path-registration) or the structured-attrs JSON of exportReferencesGraph.",
    after_help = "Example:\n  mkkexec tree --closure .attrs.json --toplevel /nix/store/…-nixos-system-x \\\n    \
--kernel /nix/store/…-linux/bzImage --prepend-initrd /nix/store/…-initrd/initrd --output kexec-tree"
)]
pub struct Cli {
    /// No progress or summary on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Threads for compression (0: one per core; at most 256).
    #[arg(short, long, global = true, default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=256))]
    pub jobs: u32,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct ClosureArgs {
    /// The closure: a closureInfo output, a registration file, or a structured-attrs JSON file.
    #[arg(long)]
    pub closure: Utf8PathBuf,
    /// In a structured-attrs JSON, the key of `exportReferencesGraph.<key>`.
    #[arg(long, default_value = "closure")]
    pub closure_attr: String,
    /// Read store paths below this directory (a chroot store); `/` is the real store.
    #[arg(long, default_value = "/")]
    pub root: Utf8PathBuf,
}

#[derive(Args, Debug)]
pub struct SquashfsArgs {
    /// Block compression of the store image.
    #[arg(long, value_enum, default_value_t = SquashfsCompression::Zstd)]
    pub squashfs_compression: SquashfsCompression,
    #[arg(long, help = level::help::<SquashfsCompression>())]
    pub squashfs_level: Option<u32>,
    /// Squashfs block size in bytes: a power of two from 4096 to 1048576.
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE)]
    pub block_size: u32,
    /// Keep compressed blocks in this directory and reuse them on a rebuild (same image bytes).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<Utf8PathBuf>,
    /// After the build, remove the least recently used cache entries until the cache is this small.
    #[arg(long, value_name = "N", requires = "cache")]
    pub cache_max_bytes: Option<u64>,
}

#[derive(Args, Debug)]
pub struct InitrdArgs {
    /// Compression of the appended cpio (the kernel reads zstd, gzip, xz with CRC32, or none).
    /// By default none: the squashfs in it is compressed already; compressing it again saves
    /// 1.6% of the bytes at zstd 19 for 55% more build time, 0.8% at zstd 3 for about a second
    /// per GiB (README, "Benchmarks").
    #[arg(long, value_enum, default_value_t = InitrdCompression::None)]
    pub initrd_compression: InitrdCompression,
    #[arg(long, help = level::help::<InitrdCompression>())]
    pub initrd_level: Option<u32>,
}

/// Static tools to bundle, so the old host needs only a shell.
#[derive(Args, Debug)]
pub struct ToolArgs {
    /// A static kexec (pkgsStatic.kexec-tools); kexec-boot uses it before the host's.
    #[arg(long)]
    pub kexec: Option<Utf8PathBuf>,
    /// A static ip (pkgsStatic.iproute2), with which kexec-boot reads the network to carry.
    #[arg(long)]
    pub ip: Option<Utf8PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pack a closure into a squashfs image as nixpkgs' make-squashfs.nix lays it out.
    #[command(
        after_help = "Example:\n  mkkexec squashfs --closure /nix/store/…-closure-info --output store.squashfs"
    )]
    Squashfs {
        #[command(flatten)]
        closure: ClosureArgs,
        /// The image to write.
        #[arg(long, short)]
        output: Utf8PathBuf,
        #[command(flatten)]
        squashfs: SquashfsArgs,
    },
    /// Write a compressed newc cpio of files, after prepended initrds.
    #[command(
        after_help = "Example:\n  mkkexec initrd --prepend-initrd stage1/initrd --file store.squashfs:/nix-store.squashfs \\\n    --output initrd.gz"
    )]
    Initrd {
        /// The initrd to write.
        #[arg(long, short)]
        output: Utf8PathBuf,
        /// An initrd to put first, byte for byte (repeatable, in order).
        #[arg(long = "prepend-initrd")]
        prepend_initrd: Vec<Utf8PathBuf>,
        /// SRC:DEST, a file to add at DEST (repeatable; parent directories are created).
        #[arg(long = "file")]
        files: Vec<FileSpec>,
        #[command(flatten)]
        initrd: InitrdArgs,
    },
    /// Build the whole kexec tree: bzImage, initrd.gz, kexec-boot, netboot.ipxe (and kexec, ip).
    #[command(
        after_help = "Example:\n  mkkexec tree --closure .attrs.json --toplevel /nix/store/…-nixos-system-x \\\n    \
--kernel …/bzImage --prepend-initrd …/initrd --kernel-param console=ttyS0 --output tree"
    )]
    Tree {
        #[command(flatten)]
        closure: ClosureArgs,
        /// The system's toplevel store path; the script boots its `init`.
        #[arg(long)]
        toplevel: String,
        /// The kernel image to boot (bzImage on x86_64, Image on aarch64).
        #[arg(long)]
        kernel: Utf8PathBuf,
        /// NixOS' stage-1 initrd, put before the store (repeatable).
        #[arg(long = "prepend-initrd")]
        prepend_initrd: Vec<Utf8PathBuf>,
        /// A kernel parameter added after `init=` (repeatable).
        #[arg(long = "kernel-param", allow_hyphen_values = true)]
        kernel_params: Vec<String>,
        /// The directory to create.
        #[arg(long, short)]
        output: Utf8PathBuf,
        #[command(flatten)]
        squashfs: SquashfsArgs,
        #[command(flatten)]
        initrd: InitrdArgs,
        #[command(flatten)]
        tools: ToolArgs,
        /// Split a store past 4 GiB (the newc limit) into as many images as
        /// it needs, /nix-store.squashfs, /nix-store-1.squashfs, …; the stage 1
        /// must mount them all as lower layers of the /nix/store overlay.
        #[arg(long, conflicts_with = "store_parts")]
        split_store: bool,
        /// Write exactly N store images, /nix-store.squashfs up to
        /// /nix-store-(N-1).squashfs: the split of --split-store, then empty
        /// images, for a stage 1 that mounts N parts (the NixOS module's
        /// nixosKexec.storeParts); a store needing more is refused before
        /// anything is compressed. [default: 1, and a store past 4 GiB is refused]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
        store_parts: Option<u32>,
        /// Test-only: the largest squashfs image one part of the store may
        /// make, in bytes (default: 4 GiB - 1, the newc limit), so that a
        /// small store splits in tests.
        #[arg(long, hide = true)]
        test_part_limit: Option<u64>,
    },
    /// Render kexec-boot (or netboot.ipxe) for an existing initrd.
    #[command(
        after_help = "Example:\n  mkkexec script --toplevel /nix/store/…-nixos-system-x --kernel tree/bzImage \\\n    --initrd tree/initrd.gz --output tree/kexec-boot"
    )]
    Script {
        /// The system's toplevel store path.
        #[arg(long)]
        toplevel: String,
        /// The initrd the script will load (read to size the memory check and for its SHA-256).
        #[arg(long)]
        initrd: Utf8PathBuf,
        /// The kernel the script will load (kexec-boot checks its size and SHA-256); not for --ipxe.
        #[arg(long, required_unless_present = "ipxe")]
        kernel: Option<Utf8PathBuf>,
        /// A kernel parameter added after `init=` (repeatable).
        #[arg(long = "kernel-param", allow_hyphen_values = true)]
        kernel_params: Vec<String>,
        /// Write netboot.ipxe instead of kexec-boot.
        #[arg(long)]
        ipxe: bool,
        /// With --ipxe: the kernel's file name beside netboot.ipxe on the server.
        #[arg(long, default_value = "bzImage", requires = "ipxe")]
        kernel_name: String,
        /// With --ipxe: the initrd's file name beside netboot.ipxe on the server.
        #[arg(long, default_value = "initrd.gz", requires = "ipxe")]
        initrd_name: String,
        /// The script to write.
        #[arg(long, short)]
        output: Utf8PathBuf,
    },
    /// Pack a kexec tree into a tar.gz: to unpack at `/` (/nixos-kexec/bin/nixos-kexec), or
    /// nixos-anywhere's kexec/run.
    #[command(
        after_help = "Examples:\n  mkkexec tarball --tree tree --kexec /nix/store/…-kexec-tools-static/bin/kexec \\\n    --output nixos-system-x86_64-linux.tar.gz\n  mkkexec tarball --tree tree --layout kexec-installer \\\n    --output nixos-kexec-installer-x86_64-linux.tar.gz   # nixos-anywhere --kexec FILE"
    )]
    Tarball {
        /// The kexec tree (from `mkkexec tree`).
        #[arg(long)]
        tree: Utf8PathBuf,
        /// root: nixos-kexec/… to unpack at `/`; kexec-installer: kexec/run, bzImage, initrd.gz,
        /// kexec, ip, as nixos-anywhere's --kexec unpacks and runs it.
        #[arg(long, value_enum, default_value_t = crate::boot::tarball::Layout::Root)]
        layout: crate::boot::tarball::Layout,
        /// Tools to bundle instead of the tree's own, if it has them.
        #[command(flatten)]
        tools: ToolArgs,
        /// gzip level, 1-9.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
        level: u32,
        /// The tarball to write.
        #[arg(long, short)]
        output: Utf8PathBuf,
    },
    /// Turn the network state kexec-boot carried into systemd-networkd units.
    #[command(
        long_about = "Turn the network state kexec-boot carried from the old host (ip -json addr, \
ip -json -details link, ip -json -4/-6 route, each link's IPv6 sysctls, the DHCP clients' lease files, \
resolv.conf; or, where no ip spoke JSON, its /proc/net and /sys/class/net files) into \
systemd-networkd units that rebuild the same topology: NICs matched by MAC address (a bond's ports \
by permanent MAC), bonds, bridges and VLANs made again by .netdev units, static addresses, peers, \
MTUs and routes as they were, DHCP asked for again as the same client for the same address, \
router advertisements where the old host took them, its nameservers. What it cannot rebuild it \
says, and the NICs under it ask DHCP. The NixOS module runs this before network-pre.target.",
        after_help = "Example:\n  mkkexec network --state /var/lib/nixos-kexec/network --output /run/systemd/network"
    )]
    Network {
        /// The carried network directory (addrs.json, links.json, routes-v4.json, routes-v6.json, resolv.conf, ipv6/, leases/; or proc/).
        #[arg(long)]
        state: Utf8PathBuf,
        /// Where to write the .network and .netdev files (created if missing).
        #[arg(long, short)]
        output: Utf8PathBuf,
    },
    /// Check that an image holds what its nix-path-registration says.
    #[command(
        long_about = "Read a squashfs image, an initrd holding nix-store.squashfs, or a kexec tree \
back, and check every store path in it against the nix-path-registration inside it (NAR hash and \
size), that nothing else is there, and that every reference is registered. With --closure, also \
that it holds exactly that closure. Prints one line per problem and exits 1 if there is any.",
        after_help = "Example:\n  mkkexec verify result/initrd.gz --closure closure-info"
    )]
    Verify {
        /// A squashfs image, an initrd or a kexec tree (a directory with initrd.gz).
        path: Utf8PathBuf,
        /// The closure the image must hold exactly: a closureInfo output, a registration file, or a structured-attrs JSON file.
        #[arg(long)]
        closure: Option<Utf8PathBuf>,
        /// In a structured-attrs JSON, the key of `exportReferencesGraph.<key>`.
        #[arg(long, default_value = "closure")]
        closure_attr: String,
    },
    /// Say what an initrd or squashfs image holds.
    #[command(after_help = "Example:\n  mkkexec inspect result/initrd.gz")]
    Inspect {
        /// An initrd (possibly concatenated) or a squashfs image.
        file: Utf8PathBuf,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        enum Lib {
            #[error("std io error: {0}")]
            Io(#[from] std::io::Error),
        }
        let io = std::io::Error::other("No space left on device");
        let e = anyhow::Error::new(Lib::from(io)).context("cannot write out.img");
        assert_eq!(
            super::report(&e),
            "cannot write out.img: std io error: No space left on device"
        );
        let e = anyhow::anyhow!("b").context("a").context("c");
        assert_eq!(super::report(&e), "c: a: b");
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
