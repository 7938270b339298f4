// jemalloc instead of glibc malloc. glibc keeps the pages the config parse frees (45 MB peak at 10,000
// tags; the long-lived devices built in between pin them), so an idle agent kept ~40 MB it no longer
// used. jemalloc returns freed pages to the system after its decay time (1 s: its options are compiled
// in from .cargo/config.toml); the background thread does that while the agent is idle, when no
// allocation would trigger it. On glibc it is the C code's malloc too (Cargo.toml: SQLite's allocations
// otherwise went to glibc's per-thread arenas).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Without the thread, pages are still returned, only later (on the next allocations): not fatal.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    lineside::cli::main()
}
