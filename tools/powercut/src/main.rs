//! `powercut [--posix] BACKING MOUNTPOINT`: serves BACKING at MOUNTPOINT until a signal says
//! how to end. SIGUSR1 cuts the power (BACKING keeps only what was fsynced), SIGTERM or SIGINT
//! unmounts cleanly (BACKING gets everything). `--posix`: an fsync of a file does not keep its
//! name (see `Semantics`). For trying a program by hand; the tests use the library.

use std::path::PathBuf;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};
use quiver_powercut::Semantics;

fn main() -> ExitCode {
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let semantics = if args.first().is_some_and(|a| a.as_os_str() == "--posix") {
        args.remove(0);
        Semantics::Posix
    } else {
        Semantics::Linux
    };
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: powercut [--posix] BACKING MOUNTPOINT  (SIGUSR1: power cut; SIGTERM/SIGINT: clean unmount)");
        return ExitCode::from(2);
    };
    // Blocked before the FUSE thread starts, so it inherits the mask and only sigwait sees them.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("powercut: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let mount = match quiver_powercut::Disk::mount(backing, mountpoint, semantics) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("powercut: cannot mount {} at {}: {e}", backing.display(), mountpoint.display());
            return ExitCode::FAILURE;
        }
    };
    eprintln!("powercut: {} mounted at {}; SIGUSR1 cuts the power", backing.display(), mountpoint.display());
    let ended = match signals.wait() {
        Ok(Signal::SIGUSR1) => mount.power_cut().map(|lost| {
            eprintln!("powercut: power cut; lost unsynced content of {:?} and entries of {:?}", lost.files, lost.dirs)
        }),
        _ => mount.unmount().map(|()| eprintln!("powercut: unmounted cleanly")),
    };
    match ended {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("powercut: {e}");
            ExitCode::FAILURE
        }
    }
}
