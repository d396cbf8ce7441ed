//! `mkkexec verify`: read an image back and check that it holds what its
//! own `nix-path-registration` says: every store path present with its NAR
//! hash and size, nothing else, every reference inside; with `--closure`,
//! exactly that closure. One line per problem on stdout, exit 1.
//!
//! The image is a squashfs, an initrd holding `nix-store.squashfs`, or a
//! kexec tree (its `initrd.gz`). A store split into parts
//! (`nix-store-1.squashfs`, …) is checked as one: every registered path in
//! exactly one part.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use backhand::{FilesystemReader, InnerNode, Node, SquashfsFileReader};
use camino::{Utf8Path, Utf8PathBuf};

use crate::initrd;
use crate::nix::closure::Closure;
use crate::nix::hash::NixHash;
use crate::nix::nar::{self, NarHasher};
use crate::nix::registration::{self, PathInfo};
use crate::nix::store_path::StorePath;

const REGISTRATION: &str = "nix-path-registration";
const STORE_IN_INITRD: &str = "nix-store.squashfs";

/// Verify `path`; print problems to `out`. Ok(n) with the number of
/// problems found.
pub fn verify(path: &Utf8Path, closure: Option<&Closure>, out: &mut impl Write) -> Result<usize> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {path}"))?;
    let (images, _tmp) = if meta.is_dir() {
        let initrd = path.join("initrd.gz");
        if !initrd.is_file() {
            bail!(
                "{path} is a directory without initrd.gz: pass a kexec tree, an initrd or a squashfs image"
            );
        }
        let (imgs, tmp) = squashfs_of_initrd(&initrd)?;
        (imgs, Some(tmp))
    } else if is_squashfs(path)? {
        (vec![path.to_owned()], None)
    } else {
        let (imgs, tmp) = squashfs_of_initrd(path)?;
        (imgs, Some(tmp))
    };
    let problems = check_image(&images, closure)?;
    for p in &problems {
        writeln!(out, "{p}")?;
    }
    Ok(problems.len())
}

fn is_squashfs(path: &Utf8Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = File::open(path).with_context(|| format!("cannot open {path}"))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("cannot read {path}"))?;
    Ok(&magic[..n] == b"hsqs")
}

/// The store images inside an initrd (`nix-store.squashfs`, then the parts
/// of a split store, `nix-store-1.squashfs`, …), copied out into a temporary
/// directory.
fn squashfs_of_initrd(path: &Utf8Path) -> Result<(Vec<Utf8PathBuf>, tempfile::TempDir)> {
    let tmp = tempfile::Builder::new()
        .prefix("mkkexec-verify")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let img = Utf8Path::from_path(tmp.path())
        .context("the temporary directory's name is not UTF-8")?
        .join(STORE_IN_INITRD);
    let mut f = File::create(&img).with_context(|| format!("cannot create {img}"))?;
    let found = initrd::extract(path, STORE_IN_INITRD, &mut f)?;
    if !found {
        bail!(
            "{path} holds no {STORE_IN_INITRD}: it is not an initrd made by mkkexec (or \
             nixpkgs' netboot), or not an initrd at all"
        );
    }
    let mut imgs = vec![img];
    for i in 1.. {
        let name = format!("nix-store-{i}.squashfs");
        let part = imgs[0].with_file_name(&name);
        let mut f = File::create(&part).with_context(|| format!("cannot create {part}"))?;
        if !initrd::extract(path, &name, &mut f)? {
            break;
        }
        imgs.push(part);
    }
    Ok((imgs, tmp))
}

fn open_image(img: &Utf8Path) -> Result<FilesystemReader<'static>> {
    let f = BufReader::new(File::open(img).with_context(|| format!("cannot open {img}"))?);
    FilesystemReader::from_reader(f).map_err(|e| {
        anyhow::anyhow!(
            "{img} is not a squashfs image mkkexec can read ({e}); build or copy it again"
        )
    })
}

/// What the images hold at their top: store paths and, in the first, the
/// registration.
fn check_image(imgs: &[Utf8PathBuf], closure: Option<&Closure>) -> Result<Vec<String>> {
    let first = imgs.first().context("no image to verify")?;
    let fs = open_image(first)?;
    let mut problems = Vec::new();

    // The registration, from the image.
    let reg_node = fs
        .files()
        .find(|n| n.fullpath == Path::new("/").join(REGISTRATION));
    let infos: Vec<PathInfo> = match reg_node.map(|n| &n.inner) {
        Some(InnerNode::File(file)) => {
            let mut text = Vec::new();
            match fs.file(file).reader_checked() {
                Ok(mut r) => {
                    if let Err(e) = r.read_to_end(&mut text) {
                        problems.push(format!("/{REGISTRATION}: cannot be read ({e})"));
                    }
                }
                Err(e) => problems.push(format!("/{REGISTRATION}: cannot be read ({e})")),
            }
            match std::str::from_utf8(&text)
                .map_err(|e| e.to_string())
                .and_then(|t| registration::parse(t).map_err(|e| e.to_string()))
            {
                Ok(infos) => infos,
                Err(e) => {
                    problems.push(format!("/{REGISTRATION}: does not parse: {e}"));
                    Vec::new()
                }
            }
        }
        _ => {
            problems.push(format!(
                "/{REGISTRATION}: missing: the image does not say what it holds"
            ));
            Vec::new()
        }
    };
    let registered: BTreeMap<String, &PathInfo> = infos
        .iter()
        .map(|i| (i.path.base_name().to_owned(), i))
        .collect();

    // The closure is complete: every reference is registered.
    for info in &infos {
        for r in &info.references {
            if !registered.contains_key(r.base_name()) {
                problems.push(format!(
                    "{}: refers to {r}, which the registration does not hold (the closure is not complete)",
                    info.path
                ));
            }
        }
    }

    // Each store path in the images, hashed as a NAR from its image.
    let mut seen = BTreeSet::new();
    drop(fs);
    for (part, img) in imgs.iter().enumerate() {
        let fs = open_image(img)?;
        check_paths(&fs, part, &registered, &mut seen, &mut problems);
    }
    for (name, info) in &registered {
        if !seen.contains(name) {
            problems.push(format!("{}: registered, not in the image", info.path));
        }
    }

    // Exactly the closure given.
    if let Some(c) = closure {
        let want: BTreeMap<&StorePath, &PathInfo> = c.paths.iter().map(|i| (&i.path, i)).collect();
        let have: BTreeMap<&StorePath, &PathInfo> = infos.iter().map(|i| (&i.path, i)).collect();
        for (p, w) in &want {
            match have.get(p) {
                None => problems.push(format!("{p}: in {}, not in the image", c.name())),
                Some(h) => {
                    if h.nar_hash != w.nar_hash || h.nar_size != w.nar_size {
                        problems.push(format!(
                            "{p}: the image registers {} ({} bytes), {} says {} ({} bytes)",
                            c.show_hash(&h.nar_hash),
                            h.nar_size,
                            c.name(),
                            c.show_hash(&w.nar_hash),
                            w.nar_size
                        ));
                    }
                    let (hr, wr): (BTreeSet<_>, BTreeSet<_>) =
                        (h.references.iter().collect(), w.references.iter().collect());
                    if hr != wr {
                        problems.push(format!(
                            "{p}: the image registers other references than {}",
                            c.name()
                        ));
                    }
                }
            }
        }
        for p in have.keys() {
            if !want.contains_key(p) {
                problems.push(format!("{p}: in the image, not in {}", c.name()));
            }
        }
    }
    Ok(problems)
}

/// Hash each store path of one part of the store (`part`, 0 for the one
/// holding the registration) against the registration.
fn check_paths(
    fs: &FilesystemReader,
    part: usize,
    registered: &BTreeMap<String, &PathInfo>,
    seen: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let nodes: Vec<&Node<SquashfsFileReader>> = fs.files().collect();
    let mut i = 0;
    while i < nodes.len() {
        let Some(top) = top_name(&nodes[i].fullpath) else {
            i += 1; // the root
            continue;
        };
        let end = nodes[i..]
            .iter()
            .position(|n| top_name(&n.fullpath).as_deref() != Some(top.as_str()))
            .map_or(nodes.len(), |k| i + k);
        let group = &nodes[i..end];
        i = end;
        if top == REGISTRATION {
            if part > 0 {
                problems.push(format!("/{REGISTRATION}: also in part {part} of the store"));
            }
            continue;
        }
        let Some(info) = registered.get(&top) else {
            problems.push(format!("/{top}: in the image, not in its registration"));
            continue;
        };
        if !seen.insert(top.clone()) {
            problems.push(format!("{}: in two parts of the store", info.path));
            continue;
        }
        match nar_of(fs, group) {
            Ok((hash, size)) => {
                if hash != info.nar_hash || size != info.nar_size {
                    problems.push(format!(
                        "{}: its contents hash to {hash} ({size} bytes as a NAR), the registration says {} ({} bytes)",
                        info.path, info.nar_hash, info.nar_size
                    ));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", info.path)),
        }
    }
}

/// The first component below the root, as text.
fn top_name(p: &Path) -> Option<String> {
    p.components()
        .find_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
}

/// The NAR hash and size of one store path: its nodes, in the image's
/// order (depth first, names in byte order, which is the NAR's).
fn nar_of(
    fs: &FilesystemReader,
    group: &[&Node<SquashfsFileReader>],
) -> std::result::Result<(NixHash, u64), String> {
    let mut h = NarHasher::default();
    let mut buf = Vec::new();
    nar::archive_start(&mut buf);
    // Depths of the directories open above the current node.
    let mut open: Vec<usize> = Vec::new();
    let close_to = |open: &mut Vec<usize>, depth: usize, buf: &mut Vec<u8>| {
        while open.last().is_some_and(|&d| d >= depth) {
            let d = open.pop().unwrap_or(0);
            nar::close(buf); // the directory
            if d > 1 {
                nar::close(buf); // its entry
            }
        }
    };
    for node in group {
        let depth = node
            .fullpath
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count();
        close_to(&mut open, depth, &mut buf);
        if depth > 1 {
            let name = node
                .fullpath
                .file_name()
                .map(|n| n.as_bytes())
                .unwrap_or_default();
            nar::entry_start(&mut buf, name);
        }
        let shown = node.fullpath.display();
        match &node.inner {
            InnerNode::Dir(_) => {
                nar::dir_start(&mut buf);
                open.push(depth);
                continue;
            }
            InnerNode::Symlink(s) => nar::symlink(&mut buf, s.link.as_os_str().as_bytes()),
            InnerNode::File(file) => {
                let len = file.file_len() as u64;
                nar::file_start(
                    &mut buf,
                    nar::is_executable(u32::from(node.header.permissions)),
                    len,
                );
                h.update(&buf);
                buf.clear();
                let mut r = fs
                    .file(file)
                    .reader_checked()
                    .map_err(|e| format!("{shown} cannot be read from the image ({e})"))?;
                let mut chunk = vec![0u8; 1 << 16];
                let mut got = 0u64;
                loop {
                    let n = r
                        .read(&mut chunk)
                        .map_err(|e| format!("{shown} cannot be read from the image ({e})"))?;
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                    h.update(chunk.get(..n).unwrap_or_default());
                }
                if got != len {
                    return Err(format!(
                        "{shown} has {got} bytes of data in the image, its inode says {len}"
                    ));
                }
                nar::file_end(&mut buf, len);
            }
            _ => {
                return Err(format!(
                    "{shown} is a device, fifo or socket, which no store path holds"
                ));
            }
        }
        if depth > 1 {
            nar::close(&mut buf);
        }
    }
    close_to(&mut open, 0, &mut buf);
    h.update(&buf);
    Ok(h.finish())
}
