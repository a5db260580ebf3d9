//! The Rust version the README promises is the one the workspace declares,
//! and no locked dependency needs a newer one. (Clippy's `incompatible_msrv`
//! checks our own code against the declared version; this checks the rest.)

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|part| part.parse::<u64>().unwrap());
    (
        parts.next().unwrap(),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn the_stated_rust_version_covers_every_locked_dependency() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The dependencies built here: offline, cargo has fetched no others
    // (a Windows-only crate of a dependency, say).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc).arg("-vV").output().expect("rustc runs");
    let host = String::from_utf8_lossy(&rustc_version.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    let output = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    let resolved: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["id"].as_str().unwrap())
        .collect();
    let packages = metadata["packages"].as_array().unwrap();
    let declared = |id: &str| {
        packages
            .iter()
            .find(|package| package["id"] == id)
            .and_then(|package| package["rust_version"].as_str())
            .map(|text| (text.to_owned(), package_name(packages, id)))
    };

    let ours: Vec<String> = members
        .iter()
        .map(|id| declared(id).expect("every member declares rust-version").0)
        .collect();
    let workspace = ours[0].clone();
    assert!(
        ours.iter().all(|v| *v == workspace),
        "members disagree: {ours:?}"
    );

    let mut too_new = Vec::new();
    for id in resolved.iter().filter(|id| !members.contains(id)) {
        if let Some((needs, name)) = declared(id) {
            if version(&needs) > version(&workspace) {
                too_new.push(format!("{name} needs {needs}"));
            }
        }
    }
    assert!(
        too_new.is_empty(),
        "rust-version {workspace} is below what these need: {too_new:?}"
    );

    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let short = workspace.trim_end_matches(".0");
    assert!(
        readme.contains(&format!("Rust toolchain ({short} or newer")),
        "the README states rust-version {short}"
    );
}

fn package_name(packages: &[Value], id: &str) -> String {
    packages
        .iter()
        .find(|package| package["id"] == id)
        .map(|package| {
            format!(
                "{} {}",
                package["name"].as_str().unwrap_or("?"),
                package["version"].as_str().unwrap_or("?")
            )
        })
        .unwrap_or_default()
}
