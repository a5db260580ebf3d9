//! The allocator sets mimalloc's option before anything else allocates.

#[global_allocator]
static ALLOCATOR: manifold_alloc::ServerAllocator = manifold_alloc::ServerAllocator;

#[test]
fn arenas_are_committed_on_demand_once_anything_was_allocated() {
    let allocated = vec![0u8; 4096];
    // SAFETY: reads an option's value.
    let eager = unsafe { libmimalloc_sys::mi_option_get(4) };
    assert_eq!(eager, 0, "mi_option_arena_eager_commit");
    drop(allocated);
}
