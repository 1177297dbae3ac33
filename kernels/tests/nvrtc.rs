//! Every kernel compiles with NVRTC, without a warning, for Hopper (sm_90, the H200) and one
//! older architecture (sm_80, Ampere). Runs on machines without a GPU: NVRTC makes PTX without
//! a driver. scripts/test puts PyPI's NVRTC on LD_LIBRARY_PATH; without it this test fails and
//! says how to install it.

use dsgw_kernels::compile::{CompileError, compile};
use dsgw_kernels::kernel_names;

#[test]
fn every_kernel_compiles_cleanly_for_sm_90_and_sm_80() {
    for arch in ["sm_90", "sm_80"] {
        let compiled = match compile(arch) {
            Ok(c) => c,
            Err(e @ CompileError::NvrtcMissing) => panic!("{e}"),
            Err(e) => panic!("{e}"),
        };
        assert!(
            compiled.log.is_empty(),
            "{arch}: the compiler said:\n{}",
            compiled.log
        );
        assert!(compiled.ptx.contains(&format!(".target {arch}")), "{arch}");
        for kernel in kernel_names() {
            assert!(
                compiled.ptx.contains(&format!(".entry {kernel}(")),
                "{arch}: no entry point for {kernel}"
            );
        }
    }
}

#[test]
fn a_broken_kernel_is_reported_with_the_compiler_log() {
    // The same path reports errors with NVRTC's log, so a bad edit is readable in CI.
    let e = dsgw_kernels::compile::compile("sm_1").unwrap_err();
    assert!(matches!(e, CompileError::Failed { .. }), "{e}");
}
