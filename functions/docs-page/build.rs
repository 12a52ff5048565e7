//! Compresses the viewer's files with zopfli (gzip format) at build time: they are served as they are
//! stored, `Content-Encoding: gzip`, so the function carries about a quarter of their size and the
//! browser downloads that much.

use std::error::Error;
use std::path::{Path, PathBuf};

/// The assets of `assets/` that are served compressed.
const COMPRESSED: &[&str] = &["swagger-ui-bundle.js", "swagger-ui.css", "docs.js"];

fn main() -> Result<(), Box<dyn Error>> {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for name in COMPRESSED {
        let source = assets.join(name);
        println!("cargo::rerun-if-changed={}", source.display());
        let content = std::fs::read(&source)?;
        let mut compressed = Vec::new();
        zopfli::compress(
            zopfli::Options::default(),
            zopfli::Format::Gzip,
            content.as_slice(),
            &mut compressed,
        )?;
        std::fs::write(out.join(format!("{name}.gz")), compressed)?;
    }
    Ok(())
}
