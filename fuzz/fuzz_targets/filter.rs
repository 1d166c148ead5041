//! Filter text, as a client sends it: the parser must refuse or accept without panicking, and
//! what it accepts must evaluate exactly like the reference evaluator (`quiver_fuzz::check_filter`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        quiver_fuzz::check_filter(text);
    }
});
