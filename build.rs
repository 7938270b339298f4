//! Code layout for the release binary (issue 14, idle memory). With `LINESIDE_SYMBOL_ORDER` naming a
//! symbol ordering file (written by `scripts/order-symbols` from the functions an idle agent runs), the
//! binary is linked with those functions first and together, so the pages the kernel maps around the
//! code touched at start are mostly that code (without it, the touched code is spread over the whole
//! text and nearly all of it ends up resident). Only for x86_64 Linux GNU, where rustc links with
//! rust-lld (`--symbol-ordering-file` is lld's); without the variable nothing changes.

fn main() {
    println!("cargo:rerun-if-env-changed=LINESIDE_SYMBOL_ORDER");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-linux-gnu" {
        // Relative relocations packed (DT_RELR) instead of 48,000 RELA entries: the loader reads
        // every entry at start, which kept the 1.1 MiB `.rela.dyn` resident for the life of the agent
        // (issue 14, idle memory). The binary stays position-independent (ASLR). Needs glibc 2.36 at
        // run time (Debian 12, Ubuntu 22.10 and later); scripts/package puts that into Depends, and
        // the static musl build is the one for older images.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let Some(order) = std::env::var_os("LINESIDE_SYMBOL_ORDER").filter(|o| !o.is_empty()) else {
        return;
    };
    if target != "x86_64-unknown-linux-gnu" {
        println!(
            "cargo:warning=LINESIDE_SYMBOL_ORDER is set, but symbol ordering is only wired for x86_64-unknown-linux-gnu (rust-lld); linking {target} without it"
        );
        return;
    }
    let order = std::path::PathBuf::from(order);
    println!("cargo:rerun-if-changed={}", order.display());
    // Names the ordering file lists that this build does not have (another build's hashes) are
    // skipped silently: a stale file only orders less.
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
        order.display()
    );
}
