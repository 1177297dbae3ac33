//! How the process's heap gives memory back to the system (glibc's allocator; elsewhere both
//! calls do nothing).
//!
//! glibc serves a large allocation (128 KiB and more) with its own mapping, returned when freed,
//! but by default it raises that threshold to the size of each such buffer it frees, up to
//! 32 MiB, and lets the heap keep twice as much free at its top: after one request of a few
//! megabytes every later buffer of that size came from the heap and stayed there (an 8 MB
//! body kept 8 - 24 MB resident). [`hand_back_large_buffers`] fixes the threshold instead;
//! [`trim`] returns what smaller allocations leave free after a burst.

/// Keeps glibc's mmap threshold at its default, so large buffers (request bodies of megabytes,
/// their parsed and re-encoded copies) go back to the system as soon as they are freed. Call it
/// before any other thread starts. An operator's own malloc settings (`GLIBC_TUNABLES`,
/// `MALLOC_MMAP_THRESHOLD_`) win.
#[allow(unsafe_code)]
pub fn hand_back_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_operator = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold"));
        if !set_by_operator {
            // SAFETY: mallopt takes no pointers; setting the threshold also turns off its
            // dynamic adjustment, which is the point.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
}

/// glibc's own default: below it, an allocation comes from the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Returns free heap pages to the system (glibc's `malloc_trim`): a walk of the whole heap, for
/// after a burst, never under load.
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
