//! `manifold config check FILE`: every problem of a host configuration at
//! once, each with its key, without starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use manifold_config::SwitchConfig;

use super::Failure;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Read and check a configuration file as the switch would at start-up, and list every
    /// problem with its key (secrets named by `*_env` and `*_file` are read too).
    Check {
        /// The file to check.
        #[arg(default_value = "fixtures/manifold.toml")]
        file: PathBuf,
    },
}

impl ConfigCommand {
    pub fn run(self) -> Result<ExitCode, Failure> {
        match self {
            ConfigCommand::Check { file } => Ok(check(&file)),
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match SwitchConfig::load(file) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!(
                    "{}: {}: warning: {}",
                    file.display(),
                    warning.key,
                    warning.problem
                );
            }
            println!(
                "{}: valid: {} app{}, {} provider{}",
                file.display(),
                config.apps.len(),
                if config.apps.len() == 1 { "" } else { "s" },
                config.providers.len(),
                if config.providers.len() == 1 { "" } else { "s" },
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            // One line per problem, `file: key: problem`.
            eprintln!("{error}");
            let count = error.problems.len();
            eprintln!(
                "manifold: {} problem{} in {}",
                count,
                if count == 1 { "" } else { "s" },
                file.display()
            );
            ExitCode::FAILURE
        }
    }
}
