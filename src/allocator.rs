//! Tuning of mimalloc, the allocator of the `vizflow` binary and the benchmarks.

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, which the Rust
/// bindings do not name); checked against its neighbour below.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const _: () = assert!(libmimalloc_sys::mi_option_use_numa_nodes == MI_OPTION_PURGE_DELAY + 1);

/// Tells mimalloc to keep the memory it frees for reuse instead of returning it to the
/// operating system after a delay, unless `MIMALLOC_PURGE_DELAY` (or its legacy name
/// `MIMALLOC_RESET_DELAY`) is set: mimalloc then purges as that says (`0` returns freed
/// memory at once).
///
/// A date's stages allocate and free gigabytes; returned memory has to be faulted in
/// and zeroed again by the kernel for the next date, which cost about a quarter of a
/// multi-date run's CPU time on the development VM. With this, a process's memory stays
/// near its peak until it exits, and grows over the first dates of a run as the freed
/// memory is not all reused (see the README's performance section for figures).
/// It only matters when mimalloc is the global allocator, as in the `vizflow` binary.
pub fn keep_freed_memory() {
    // mimalloc reads its options from the environment, under their current and legacy
    // names; an empty value is no setting.
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    if set("MIMALLOC_PURGE_DELAY") || set("MIMALLOC_RESET_DELAY") {
        return;
    }
    // SAFETY: `mi_option_set` stores an option's value; it has no preconditions, may
    // be called at any time, and -1 is the documented value for "never purge".
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}
