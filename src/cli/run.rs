//! Carries out a parsed command line: turns flags into each artifact's
//! options (checked once, before any work) and calls its builder.

use anyhow::Result;

use camino::Utf8Path;

use super::{Cli, ClosureArgs, Command, InitrdArgs, SquashfsArgs, ToolArgs, inspect, verify};
use crate::boot::{script, tarball, tree};
use crate::nix::closure::Closure;
use crate::{initrd, output, squashfs};

fn jobs(cli: &Cli) -> u32 {
    if cli.jobs > 0 {
        return cli.jobs;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn load(c: &ClosureArgs) -> Result<Closure> {
    Closure::load(&c.closure, &c.closure_attr)
}

fn initrd_opts(a: &InitrdArgs, cli: &Cli) -> Result<initrd::Options> {
    Ok(initrd::Options {
        codec: initrd::Codec::new(a.initrd_compression, a.initrd_level)?,
        jobs: jobs(cli),
        quiet: cli.quiet,
    })
}

fn squashfs_opts(a: &SquashfsArgs, cli: &Cli) -> Result<squashfs::Options> {
    Ok(squashfs::Options {
        codec: squashfs::Codec::new(a.squashfs_compression, a.squashfs_level, a.block_size)?,
        jobs: jobs(cli),
        quiet: cli.quiet,
        cache: a.cache.as_ref().map(|d| d.clone().into_std_path_buf()),
        cache_max_bytes: a.cache_max_bytes,
    })
}

/// The tools to bundle, by their name in a tree.
fn bundled(t: &ToolArgs) -> Vec<(&'static str, &Utf8Path)> {
    [("kexec", &t.kexec), ("ip", &t.ip)]
        .into_iter()
        .filter_map(|(name, p)| p.as_deref().map(|p| (name, p)))
        .collect()
}

/// Run `cli`; interrupting signals remove what it was writing.
pub fn run(cli: Cli) -> Result<()> {
    if let Err(e) = output::on_signals() {
        eprintln!("mkkexec: warning: {e:#}; an interrupted run may leave a temporary file");
    }
    match &cli.command {
        Command::Squashfs {
            closure,
            output,
            squashfs,
        } => {
            let opts = squashfs_opts(squashfs, &cli)?;
            squashfs::build(&load(closure)?, &closure.root, output, &opts)?;
        }
        Command::Initrd {
            output,
            prepend_initrd,
            files,
            initrd,
        } => {
            initrd::build(output, prepend_initrd, files, &initrd_opts(initrd, &cli)?)?;
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
            tools,
            test_part_limit,
            split_store,
            store_parts,
        } => {
            let opts = tree::TreeOptions {
                root: &closure.root,
                toplevel,
                kernel,
                prepend_initrd,
                kernel_params,
                squashfs: squashfs_opts(squashfs, &cli)?,
                initrd: initrd_opts(initrd, &cli)?,
                tools: bundled(tools),
                part_limit: test_part_limit.unwrap_or(crate::squashfs::NEWC_LIMIT),
                parts: match (store_parts, split_store) {
                    (Some(n), _) => tree::StoreParts::Exactly(*n as usize),
                    (None, true) => tree::StoreParts::AsNeeded,
                    (None, false) => tree::StoreParts::One,
                },
            };
            tree::build(&load(closure)?, output, &opts)?;
        }
        Command::Script {
            toplevel,
            initrd,
            kernel,
            kernel_params,
            ipxe,
            kernel_name,
            initrd_name,
            output,
        } => {
            let mut spec = script::BootSpec::new(toplevel, kernel_params).with_initrd(initrd)?;
            if let Some(kernel) = kernel {
                spec = spec.with_kernel(kernel)?;
            }
            let (text, mode) = if *ipxe {
                let text = script::netboot_ipxe(&spec, kernel_name, initrd_name)?;
                (text, 0o644)
            } else {
                (script::kexec_boot(&spec)?, 0o755)
            };
            output::write_file(output, text.as_bytes(), mode)?;
        }
        Command::Tarball {
            tree,
            layout,
            tools,
            level,
            output,
        } => tarball::build(tree, output, &bundled(tools), *level, *layout)?,
        Command::Network { state, output } => crate::carry::write_network_units(state, output)?,
        Command::Inspect { file } => inspect::inspect(file, &mut std::io::stdout().lock())?,
        Command::Verify {
            path,
            closure,
            closure_attr,
        } => {
            let closure = match closure {
                Some(c) => Some(Closure::load(c, closure_attr)?),
                None => None,
            };
            let problems = verify::verify(path, closure.as_ref(), &mut std::io::stdout().lock())?;
            if problems > 0 {
                anyhow::bail!(
                    "{path}: {problems} problem{} (listed above): the image does not hold what \
                     its registration{} says; build it again from a store that passes \
                     `nix-store --verify --check-contents`",
                    if problems == 1 { "" } else { "s" },
                    if closure.is_some() {
                        " or the closure"
                    } else {
                        ""
                    }
                );
            }
            if !cli.quiet {
                eprintln!("{path}: every store path matches its registration");
            }
        }
    }
    Ok(())
}
