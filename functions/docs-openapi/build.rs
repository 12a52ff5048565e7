//! Turns `openapi.yaml` into the JSON this function serves, at build time: the function carries no
//! YAML parser, and a document that does not parse fails the build instead of a request.

use std::error::Error;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.yaml");
    println!("cargo::rerun-if-changed={}", source.display());
    let document: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&source)?)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("openapi.json");
    std::fs::write(out, serde_json::to_vec(&document)?)?;
    Ok(())
}
