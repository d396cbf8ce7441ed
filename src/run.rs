//! Carries out a parsed command line.

use anyhow::{Context, Result};
use camino::Utf8Path;

use crate::cli::{Cli, ClosureArgs, Command};
use crate::closure::Closure;
use crate::compress::InitrdCompression;
use crate::squashfs::SquashfsCompression;
use crate::{initrd, inspect, script, squashfs, tarball, tree};

fn jobs(j: u32) -> u32 {
    if j > 0 {
        return j;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn load(c: &ClosureArgs) -> Result<Closure> {
    Closure::load(&c.closure, &c.closure_attr)
}

fn initrd_opts(c: InitrdCompression, level: Option<u32>, cli: &Cli) -> Result<initrd::Options> {
    Ok(initrd::Options {
        compression: c,
        level: c.level(level)?,
        jobs: jobs(cli.jobs),
        quiet: cli.quiet,
    })
}

fn squashfs_opts(
    c: SquashfsCompression,
    level: Option<u32>,
    block_size: u32,
    cli: &Cli,
) -> squashfs::Options {
    squashfs::Options {
        compression: c,
        level,
        block_size,
        jobs: jobs(cli.jobs),
        quiet: cli.quiet,
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Squashfs {
            closure,
            output,
            compression,
            level,
            block_size,
        } => {
            let c = load(closure)?;
            let opts = squashfs_opts(*compression, *level, *block_size, &cli);
            squashfs::build(&c, &closure.root, output, &opts)?;
        }
        Command::Initrd {
            output,
            prepend,
            files,
            compression,
            level,
        } => {
            initrd::build(
                output,
                prepend,
                files,
                &initrd_opts(*compression, *level, &cli)?,
            )?;
        }
        Command::Tree {
            closure,
            toplevel,
            kernel,
            prepend_initrd,
            kernel_params,
            output,
            squashfs,
            initrd,
        } => {
            let c = load(closure)?;
            let opts = tree::TreeOptions {
                root: &closure.root,
                toplevel,
                kernel,
                prepend_initrd,
                kernel_params,
                squashfs: squashfs_opts(
                    squashfs.squashfs_compression,
                    squashfs.squashfs_level,
                    squashfs.block_size,
                    &cli,
                ),
                initrd: initrd_opts(initrd.initrd_compression, initrd.initrd_level, &cli)?,
            };
            tree::build(&c, output, &opts)?;
        }
        Command::Script {
            toplevel,
            initrd,
            kernel_params,
            ipxe,
            kernel_name,
            initrd_name,
            output,
        } => {
            let initrd_bytes = std::fs::metadata(initrd)
                .with_context(|| format!("cannot read {initrd}"))?
                .len();
            let spec = script::BootSpec {
                toplevel,
                kernel_params,
                initrd_bytes,
                unpacked_bytes: tree::unpacked_size(std::slice::from_ref(initrd))?,
            };
            let (text, mode) = if *ipxe {
                (
                    script::netboot_ipxe(&spec, kernel_name, initrd_name)?,
                    0o644,
                )
            } else {
                (script::kexec_boot(&spec)?, 0o755)
            };
            tree::write_file(output, text.as_bytes(), mode)?;
        }
        Command::Tarball {
            tree,
            kexec,
            level,
            output,
        } => {
            tarball::build(tree, output, kexec.as_deref(), *level)?;
        }
        Command::Inspect { file } => {
            inspect::inspect(Utf8Path::new(file), &mut std::io::stdout().lock())?
        }
    }
    Ok(())
}
