//! The sandbox a plugin instance runs in: the inert WASI subset it may import, its resource
//! limits, and its captured output.
//!
//! The Rust and C standard libraries import `wasi:io` and parts of `wasi:cli` even when a
//! plugin never prints, so the host provides exactly those, implemented here without touching
//! the outside world: empty environment and arguments, no working directory, empty stdin,
//! stdout and stderr captured into a capped buffer, no terminal, and `exit` traps. There is no
//! filesystem, socket, clock, randomness or HTTP; a component importing any of them is refused
//! by [`check_imports`] before it is instantiated. Streams are stateless, so a resource's
//! `rep` alone says which one it is and no resource table is needed.

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::ResourceLimiter;

mod generated {
    wasmtime::component::bindgen!({
        path: "src/plugin/wit/sandbox",
        world: "plugin-sandbox",
        imports: { default: trappable },
    });
}

use generated::wasi::cli::{environment, exit, stderr, stdin, stdout, terminal_input, terminal_output};
use generated::wasi::cli::{terminal_stderr, terminal_stdin, terminal_stdout};
use generated::wasi::io::{error, poll, streams};
use streams::StreamError;

/// Output bytes kept per call; the rest is counted and dropped.
pub(crate) const OUTPUT_KEPT_PER_CALL: usize = 64 * 1024;

/// What a plugin may write per `check-write` permit.
const WRITE_PERMIT: u64 = 64 * 1024;

/// `rep` of the stdout stream; stderr is [`STDERR`], stdin and pollables use 0.
const STDOUT: u32 = 1;
const STDERR: u32 = 2;

/// The store data of one plugin instance.
pub(crate) struct Sandbox {
    pub(crate) limits: SandboxLimits,
    pub(crate) output: CapturedOutput,
}

impl Sandbox {
    pub(crate) fn new(memory_max: usize) -> Sandbox {
        Sandbox { limits: SandboxLimits::new(memory_max), output: CapturedOutput::default() }
    }
}

/// Caps of one instance: linear memory in total, table elements, and counts of instances,
/// tables and memories (a component has a handful of each; a plugin needs no more).
pub(crate) struct SandboxLimits {
    memory_max: usize,
    memory_used: usize,
    /// Set when a memory growth was refused, so the trap that usually follows (the guest's
    /// allocator aborts) is reported as `memory` rather than `trap`.
    pub(crate) memory_denied: bool,
}

const TABLE_ELEMENTS_MAX: usize = 100_000;
const INSTANCES_MAX: usize = 64;
const TABLES_MAX: usize = 64;
const MEMORIES_MAX: usize = 8;

impl SandboxLimits {
    fn new(memory_max: usize) -> SandboxLimits {
        SandboxLimits { memory_max, memory_used: 0, memory_denied: false }
    }
}

impl ResourceLimiter for SandboxLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Counted over all memories of the store: the cap is per instance, not per memory.
        let next = self.memory_used.saturating_sub(current).saturating_add(desired);
        if next > self.memory_max {
            self.memory_denied = true;
            return Ok(false);
        }
        self.memory_used = next;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }

    fn instances(&self) -> usize {
        INSTANCES_MAX
    }

    fn tables(&self) -> usize {
        TABLES_MAX
    }

    fn memories(&self) -> usize {
        MEMORIES_MAX
    }
}

/// What a plugin wrote to stdout and stderr during one call: the first
/// [`OUTPUT_KEPT_PER_CALL`] bytes, and how many more were dropped.
#[derive(Default)]
pub(crate) struct CapturedOutput {
    pub(crate) kept: Vec<u8>,
    pub(crate) dropped: u64,
}

impl CapturedOutput {
    fn write(&mut self, bytes: &[u8]) {
        let room = OUTPUT_KEPT_PER_CALL.saturating_sub(self.kept.len());
        let take = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    fn drop_bytes(&mut self, len: u64) {
        self.dropped = self.dropped.saturating_add(len);
    }

    /// Logs what was captured (at debug, naming the plugin) and clears it for the next call.
    pub(crate) fn flush_to_log(&mut self, plugin: &str) {
        if self.kept.is_empty() && self.dropped == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&self.kept);
        tracing::debug!(plugin, dropped_bytes = self.dropped, output = %text.trim_end(), "plugin output");
        self.kept.clear();
        self.dropped = 0;
    }
}

/// Adds the sandbox's WASI subset to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    generated::PluginSandbox::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s)
}

/// Interfaces a plugin may import, by `namespace:package/interface` (any `0.2.x` version).
const ALLOWED_IMPORTS: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// Refuses the first import outside the sandbox's WASI subset, naming it.
pub(crate) fn check_imports<'a>(imports: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    for name in imports {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        let version_ok = version.starts_with("0.2.");
        if !(version_ok && ALLOWED_IMPORTS.contains(&interface)) {
            return Err(format!(
                "plugin imports {name}, which Quiver does not provide: plugins may import only wasi:io/*, \
                 wasi:cli/{{environment,exit,stdin,stdout,stderr,terminal-*}} at version 0.2.x \
                 (see docs/plugins.md)"
            ));
        }
    }
    Ok(())
}

type Trappable<T> = wasmtime::Result<T>;

fn output(rep: u32) -> Resource<streams::OutputStream> {
    Resource::new_own(rep)
}

fn pollable() -> Resource<poll::Pollable> {
    Resource::new_own(0)
}

impl Sandbox {
    fn capture(&mut self, stream: &Resource<streams::OutputStream>, bytes: &[u8]) {
        if matches!(stream.rep(), STDOUT | STDERR) {
            self.output.write(bytes);
        }
    }
}

impl error::Host for Sandbox {}

impl error::HostError for Sandbox {
    fn to_debug_string(&mut self, _error: Resource<error::Error>) -> Trappable<String> {
        Ok(String::new())
    }

    fn drop(&mut self, _error: Resource<error::Error>) -> Trappable<()> {
        Ok(())
    }
}

impl poll::Host for Sandbox {
    /// Every pollable of the sandbox is always ready.
    fn poll(&mut self, pollables: Vec<Resource<poll::Pollable>>) -> Trappable<Vec<u32>> {
        Ok((0..pollables.len() as u32).collect())
    }
}

impl poll::HostPollable for Sandbox {
    fn ready(&mut self, _pollable: Resource<poll::Pollable>) -> Trappable<bool> {
        Ok(true)
    }

    fn block(&mut self, _pollable: Resource<poll::Pollable>) -> Trappable<()> {
        Ok(())
    }

    fn drop(&mut self, _pollable: Resource<poll::Pollable>) -> Trappable<()> {
        Ok(())
    }
}

impl streams::Host for Sandbox {}

/// Stdin is empty: every read is end-of-stream.
impl streams::HostInputStream for Sandbox {
    fn read(&mut self, _stream: Resource<streams::InputStream>, _len: u64) -> Trappable<Result<Vec<u8>, StreamError>> {
        Ok(Err(StreamError::Closed))
    }

    fn blocking_read(
        &mut self,
        _stream: Resource<streams::InputStream>,
        _len: u64,
    ) -> Trappable<Result<Vec<u8>, StreamError>> {
        Ok(Err(StreamError::Closed))
    }

    fn skip(&mut self, _stream: Resource<streams::InputStream>, _len: u64) -> Trappable<Result<u64, StreamError>> {
        Ok(Err(StreamError::Closed))
    }

    fn blocking_skip(
        &mut self,
        _stream: Resource<streams::InputStream>,
        _len: u64,
    ) -> Trappable<Result<u64, StreamError>> {
        Ok(Err(StreamError::Closed))
    }

    fn subscribe(&mut self, _stream: Resource<streams::InputStream>) -> Trappable<Resource<poll::Pollable>> {
        Ok(pollable())
    }

    fn drop(&mut self, _stream: Resource<streams::InputStream>) -> Trappable<()> {
        Ok(())
    }
}

/// Stdout and stderr accept everything at once; the buffer keeps the first bytes of a call.
impl streams::HostOutputStream for Sandbox {
    fn check_write(&mut self, _stream: Resource<streams::OutputStream>) -> Trappable<Result<u64, StreamError>> {
        Ok(Ok(WRITE_PERMIT))
    }

    fn write(
        &mut self,
        stream: Resource<streams::OutputStream>,
        contents: Vec<u8>,
    ) -> Trappable<Result<(), StreamError>> {
        self.capture(&stream, &contents);
        Ok(Ok(()))
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<streams::OutputStream>,
        contents: Vec<u8>,
    ) -> Trappable<Result<(), StreamError>> {
        self.capture(&stream, &contents);
        Ok(Ok(()))
    }

    fn flush(&mut self, _stream: Resource<streams::OutputStream>) -> Trappable<Result<(), StreamError>> {
        Ok(Ok(()))
    }

    fn blocking_flush(&mut self, _stream: Resource<streams::OutputStream>) -> Trappable<Result<(), StreamError>> {
        Ok(Ok(()))
    }

    fn subscribe(&mut self, _stream: Resource<streams::OutputStream>) -> Trappable<Resource<poll::Pollable>> {
        Ok(pollable())
    }

    fn write_zeroes(
        &mut self,
        _stream: Resource<streams::OutputStream>,
        len: u64,
    ) -> Trappable<Result<(), StreamError>> {
        self.output.drop_bytes(len);
        Ok(Ok(()))
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        _stream: Resource<streams::OutputStream>,
        len: u64,
    ) -> Trappable<Result<(), StreamError>> {
        self.output.drop_bytes(len);
        Ok(Ok(()))
    }

    fn splice(
        &mut self,
        _dst: Resource<streams::OutputStream>,
        _src: Resource<streams::InputStream>,
        _len: u64,
    ) -> Trappable<Result<u64, StreamError>> {
        Ok(Err(StreamError::Closed))
    }

    fn blocking_splice(
        &mut self,
        _dst: Resource<streams::OutputStream>,
        _src: Resource<streams::InputStream>,
        _len: u64,
    ) -> Trappable<Result<u64, StreamError>> {
        Ok(Err(StreamError::Closed))
    }

    fn drop(&mut self, _stream: Resource<streams::OutputStream>) -> Trappable<()> {
        Ok(())
    }
}

impl environment::Host for Sandbox {
    fn get_environment(&mut self) -> Trappable<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    fn get_arguments(&mut self) -> Trappable<Vec<String>> {
        Ok(Vec::new())
    }

    fn initial_cwd(&mut self) -> Trappable<Option<String>> {
        Ok(None)
    }
}

impl exit::Host for Sandbox {
    fn exit(&mut self, status: Result<(), ()>) -> Trappable<()> {
        let how = if status.is_ok() { "success" } else { "failure" };
        Err(wasmtime::Error::msg(format!("plugin called wasi:cli/exit ({how}); a policy must return instead")))
    }
}

impl stdin::Host for Sandbox {
    fn get_stdin(&mut self) -> Trappable<Resource<streams::InputStream>> {
        Ok(Resource::new_own(0))
    }
}

impl stdout::Host for Sandbox {
    fn get_stdout(&mut self) -> Trappable<Resource<streams::OutputStream>> {
        Ok(output(STDOUT))
    }
}

impl stderr::Host for Sandbox {
    fn get_stderr(&mut self) -> Trappable<Resource<streams::OutputStream>> {
        Ok(output(STDERR))
    }
}

impl terminal_input::Host for Sandbox {}

impl terminal_input::HostTerminalInput for Sandbox {
    fn drop(&mut self, _terminal: Resource<terminal_input::TerminalInput>) -> Trappable<()> {
        Ok(())
    }
}

impl terminal_output::Host for Sandbox {}

impl terminal_output::HostTerminalOutput for Sandbox {
    fn drop(&mut self, _terminal: Resource<terminal_output::TerminalOutput>) -> Trappable<()> {
        Ok(())
    }
}

/// No terminal: plugins are not interactive.
impl terminal_stdin::Host for Sandbox {
    fn get_terminal_stdin(&mut self) -> Trappable<Option<Resource<terminal_input::TerminalInput>>> {
        Ok(None)
    }
}

impl terminal_stdout::Host for Sandbox {
    fn get_terminal_stdout(&mut self) -> Trappable<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}

impl terminal_stderr::Host for Sandbox {
    fn get_terminal_stderr(&mut self) -> Trappable<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn imports_outside_the_subset_are_named() {
        assert!(check_imports(["wasi:io/streams@0.2.4", "wasi:cli/terminal-stdout@0.2.0"]).is_ok());
        let err = check_imports(["wasi:io/poll@0.2.6", "wasi:filesystem/types@0.2.6"]).unwrap_err();
        assert!(err.starts_with("plugin imports wasi:filesystem/types@0.2.6, which Quiver does not provide"), "{err}");
        assert!(check_imports(["wasi:io/poll@0.3.0"]).is_err());
        assert!(check_imports(["wasi:clocks/wall-clock@0.2.6"]).is_err());
        assert!(check_imports(["wasi:cli/run@0.2.6"]).is_err());
    }

    #[test]
    fn output_keeps_the_first_bytes_and_counts_the_rest() {
        let mut out = CapturedOutput::default();
        out.write(&vec![b'x'; OUTPUT_KEPT_PER_CALL - 1]);
        out.write(b"abc");
        assert_eq!(out.kept.len(), OUTPUT_KEPT_PER_CALL);
        assert_eq!(out.dropped, 2);
        out.flush_to_log("test");
        assert!(out.kept.is_empty());
        assert_eq!(out.dropped, 0);
    }

    #[test]
    fn memory_cap_counts_every_memory() {
        let mut limits = SandboxLimits::new(100);
        assert!(limits.memory_growing(0, 60, None).unwrap());
        assert!(!limits.memory_growing(0, 50, None).unwrap());
        assert!(limits.memory_denied);
        assert!(limits.memory_growing(60, 100, None).unwrap());
    }
}
