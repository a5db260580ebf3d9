//! How far a long command has got, on stderr (so stdout stays its
//! output): a bar on a terminal, a plain line every tenth otherwise (a log,
//! a pipe).

use std::io::IsTerminal;

pub struct Progress {
    /// The command, in front of every plain line.
    command: &'static str,
    /// What a fraction is of, after the percentage: "of the period read".
    of: &'static str,
    bar: Option<indicatif::ProgressBar>,
    /// The last tenth reported as a plain line.
    tenth: u64,
}

impl Progress {
    const STEPS: u64 = 1_000;

    pub fn new(command: &'static str, of: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(Self::STEPS);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{command} {{bar:40}} {{percent:>3}}% {of}, {{elapsed}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            command,
            of,
            bar,
            tenth: 0,
        }
    }

    /// `done` of `total` is done.
    pub fn reached(&mut self, done: u64, total: u64) {
        let step = (u128::from(done.min(total)) * u128::from(Self::STEPS)
            / u128::from(total.max(1))) as u64;
        match &self.bar {
            Some(bar) => bar.set_position(step),
            None => {
                let tenth = step * 10 / Self::STEPS;
                if tenth > self.tenth {
                    self.tenth = tenth;
                    eprintln!("{}: {}% {}", self.command, tenth * 10, self.of);
                }
            }
        }
    }

    /// Clears the bar, or says `done` in a plain line.
    pub fn finish(self, done: &str) {
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("{}: {done}", self.command),
        }
    }
}
