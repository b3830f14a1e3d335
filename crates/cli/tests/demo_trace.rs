//! The bundled demo trace is exactly what the documented `gen-trace` command produces,
//! so anyone can regenerate it and the README's run command stays reproducible.

use std::process::Command;

#[test]
fn bundled_demo_trace_regenerates_byte_for_byte() {
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/traces/demo.pcap");
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("demo.pcap");
    // Keep in sync with README.md and examples/traces/README.md.
    let status = Command::new(env!("CARGO_BIN_EXE_streamnf"))
        .args(["gen-trace", "-o"])
        .arg(&out)
        .args([
            "--packets",
            "5000",
            "--flows",
            "150",
            "--scan",
            "--scan-ports",
            "300",
            "--xss",
            "0.1",
            "--http-fraction",
            "0.3",
            "--seed",
            "7",
        ])
        .status()
        .expect("run streamnf");
    assert!(status.success());
    let a = std::fs::read(bundled).expect("bundled demo trace");
    let b = std::fs::read(&out).expect("generated");
    assert!(
        a == b,
        "examples/traces/demo.pcap differs from a fresh gen-trace ({} vs {} bytes)",
        a.len(),
        b.len()
    );
}
