//! Filter expressions built from the input with `arbitrary` and rendered to text, so that most
//! inputs parse and the evaluator comparison (`quiver_fuzz::check_filter`) runs on deep, varied
//! expressions whose literals sit on the fixture rows' edges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_fuzz::structured::{render, Cond};

fuzz_target!(|cond: Cond| {
    quiver_fuzz::check_filter(&render(&cond));
});
