//! onedrive-operator: makes "this user has a OneDrive for Business site" a declarative fact.
//!
//! Data flows one way: kube cache → gather → observe (tenant) → plan (pure) → act (tenant) →
//! write status (kube). [`plan`] holds the rules and knows neither Kubernetes nor Microsoft.

pub mod api;
pub mod cli;
pub mod controller;
pub mod jose;
pub mod m365;
pub mod plan;
pub mod simulator;
pub mod slots;
pub mod testing;

/// Selects rustls' `ring` crypto provider for the process (kube and reqwest share it). Call
/// once before any TLS connection; later calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Lets glibc's allocator keep the memory a cycle frees for the next cycle. A planning pass over
/// 100,000 sites allocates some 50 MB of short-lived lists; by default glibc hands freed memory at
/// the top of the heap back to the kernel (above 128 KiB, or a threshold it raises itself) and
/// gets it back page by page, zeroed, on the next cycle: a fifth of a steady cycle went to those
/// page faults (`bench engine`: 97 → 77 ms). Memory is still given back once more than 128 MiB
/// is free, and a process started with its own `MALLOC_*_`/`GLIBC_TUNABLES` settings keeps them.
/// Call first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let own = ["GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"];
        if own.iter().any(|v| std::env::var_os(v).is_some()) {
            return;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt only sets the allocator's parameters (it takes the arena lock itself);
        // both values are within glibc's documented ranges (the mmap threshold's maximum is 32 MiB
        // on 64-bit). Fixing the mmap threshold also stops glibc from moving it.
        unsafe {
            mallopt(M_TRIM_THRESHOLD, 128 << 20);
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
        }
    }
}
