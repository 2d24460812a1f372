//! Embeds the demo softphone page (`demo/dist/`, built by `make demo`) into the binary.
//!
//! Writes `$OUT_DIR/demo_assets.rs` with one `(name, content type, include_bytes!)` entry per
//! file of `demo/dist/`; `src/demo.rs` includes it. Without `dist/` the list is empty and the
//! daemon serves a short page saying how to build it. No network and no npm here: building
//! the page is the Makefile's job.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let demo = manifest.join("demo");
    let dist = demo.join("dist");
    println!("cargo:rerun-if-changed=build.rs");
    // A directory is scanned recursively. While dist/ is missing watch its parent instead:
    // a missing path would rerun this script (and rebuild the crate) on every build, and
    // creating dist/ changes demo/.
    if dist.is_dir() {
        println!("cargo:rerun-if-changed={}", dist.display());
    } else if demo.is_dir() {
        println!("cargo:rerun-if-changed={}", demo.display());
    }

    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();

    let mut out = String::from(
        "/// Files of demo/dist/ embedded at build time: (path below dist/, content type, bytes).\n\
         pub static FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        writeln!(
            out,
            "    ({name:?}, {:?}, include_bytes!({path:?})),",
            content_type(name)
        )
        .expect("write to String");
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::write(out_dir.join("demo_assets.rs"), out).expect("write demo_assets.rs");
}

/// Regular files under `dir`, as (`a/b.js` relative to `root`, absolute path). Names that are
/// not plain ASCII URL path segments are skipped with a warning: they could not be asked for.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect(root, &path, files);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let (Some(rel), Some(abs)) = (
            path.strip_prefix(root).ok().and_then(|p| p.to_str()),
            path.to_str(),
        ) else {
            println!(
                "cargo:warning=demo/dist: skipping {} (not UTF-8)",
                path.display()
            );
            continue;
        };
        let name = rel.replace(std::path::MAIN_SEPARATOR, "/");
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            && !name
                .split('/')
                .any(|seg| seg.is_empty() || seg.starts_with('.'));
        if !plain {
            println!("cargo:warning=demo/dist: skipping {name} (not a plain URL path)");
            continue;
        }
        files.push((name, abs.to_owned()));
    }
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wav" => "audio/wav",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}
