//! Running an independent Python reference from the interop tests.
//!
//! Each reference is a script under `crypto/interop/` built on a PyPI package
//! that shares no code with this crate. Without python3 and that package the
//! tests fail, loudly, with the install hint: an interop test that passes by
//! skipping would hide exactly what it exists to catch.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// One Python reference script and the module it cannot run without.
pub struct PythonReference {
    /// The script's file name under `crypto/interop/`.
    pub script: &'static str,
    /// The Python module the script imports (the independent implementation).
    pub module: &'static str,
    /// What to tell whoever lacks it.
    pub install_hint: &'static str,
}

impl PythonReference {
    fn script_path(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("interop")
            .join(self.script)
    }

    /// Fails with the install hint unless `python3 -c "import <module>"` works.
    fn require(&self) {
        let hint = self.install_hint;
        let probe = Command::new("python3")
            .args(["-c", &format!("import {}", self.module)])
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {hint}"));
        assert!(
            probe.status.success(),
            "python3 cannot import {} ({}); {hint}",
            self.module,
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }

    /// Runs the script with `args`, feeding `stdin` if given.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.require();
        let hint = self.install_hint;
        let mut child = Command::new("python3")
            .arg(self.script_path())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {hint}"));
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs the script and requires it to succeed.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "{} {args:?} failed:\n{}{}",
            self.script,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}
