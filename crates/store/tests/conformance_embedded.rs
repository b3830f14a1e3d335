//! Runs the trait conformance checks against the embedded backend (and the untagged subset
//! against the local baseline).

use streamnf_store::{conformance, EmbeddedStore, LocalStore};

#[test]
fn embedded_passes_all_checks() {
    conformance::run_all(&EmbeddedStore::new);
}

#[test]
fn embedded_single_shard_passes_all_checks() {
    conformance::run_all(&|| EmbeddedStore::with_shards(1));
}

#[test]
fn local_passes_untagged_checks() {
    conformance::run_untagged(&LocalStore::new);
}
