//! `exec`: run a command with the tokens in its environment, pass its exit status through, and
//! forward the signals that should reach it.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Exit status when the command cannot be started (what shells use for "not found").
pub(crate) const EXIT_CANNOT_RUN: i32 = 127;

/// The signals `exec` handles, installed before anything is minted so that an interrupt at any
/// moment still ends in a revoke instead of the default action (die with tokens live).
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal's number.
    pub(crate) async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => 2,
                _ = self.terminate.recv() => 15,
                _ = self.hangup.recv() => 1,
            }
        }
        #[cfg(not(unix))]
        std::future::pending().await
    }
}

/// Run `command` with `env` added to ours; returns the exit code to pass on (128 + signal when
/// the child died of a signal, as shells report it).
pub(crate) async fn run(
    command: &[OsString],
    env: &BTreeMap<String, String>,
    signals: &mut Signals,
) -> std::io::Result<i32> {
    let Some((program, args)) = command.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no command given after --",
        ));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env)
        .spawn()?;
    let status = forward_signals_until_exit(&mut child, signals).await?;
    Ok(exit_code(status))
}

#[cfg(unix)]
async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
    signals: &mut Signals,
) -> std::io::Result<std::process::ExitStatus> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::IsTerminal as _;

    // Ctrl-C at a terminal already reaches the child (same process group); forwarding it again
    // would count as a second Ctrl-C, which makes Terraform abandon its graceful stop.
    let terminal_delivers_interrupt = std::io::stdin().is_terminal();
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    loop {
        tokio::select! {
            status = child.wait() => return status,
            number = signals.next() => {
                let signal = match number {
                    2 if terminal_delivers_interrupt => continue,
                    2 => Signal::SIGINT,
                    1 => Signal::SIGHUP,
                    _ => Signal::SIGTERM,
                };
                if let Some(pid) = pid {
                    // The child may have exited between the signal and now; nothing to do then.
                    let _ = kill(pid, signal);
                }
            }
        }
    }
}

#[cfg(not(unix))]
async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
    _signals: &mut Signals,
) -> std::io::Result<std::process::ExitStatus> {
    child.wait().await
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    1
}
