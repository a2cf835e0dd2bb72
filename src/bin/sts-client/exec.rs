//! `exec`: run a command with the tokens in its environment, pass its exit status through, and
//! forward the signals that should reach it.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Exit status when the command cannot be started (what shells use for "not found").
pub(crate) const EXIT_CANNOT_RUN: i32 = 127;

/// Run `command` with `env` added to ours; returns the exit code to pass on (128 + signal when
/// the child died of a signal, as shells report it).
pub(crate) async fn run(
    command: &[OsString],
    env: &BTreeMap<String, String>,
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
    let status = forward_signals_until_exit(&mut child).await?;
    Ok(exit_code(status))
}

#[cfg(unix)]
async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::IsTerminal as _;
    use tokio::signal::unix::{signal, SignalKind};

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    // Ctrl-C at a terminal already reaches the child (same process group); forwarding it again
    // would count as a second Ctrl-C, which makes Terraform abandon its graceful stop.
    let terminal_delivers_interrupt = std::io::stdin().is_terminal();
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let forward = |signal: Signal| {
        if let Some(pid) = pid {
            // The child may have exited between the signal and now; nothing to do then.
            let _ = kill(pid, signal);
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => return status,
            _ = interrupt.recv() => {
                if !terminal_delivers_interrupt {
                    forward(Signal::SIGINT);
                }
            }
            _ = terminate.recv() => forward(Signal::SIGTERM),
            _ = hangup.recv() => forward(Signal::SIGHUP),
        }
    }
}

#[cfg(not(unix))]
async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
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
