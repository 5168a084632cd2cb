//! Model-checked hand-overs (shuttle), each over the real mm code: the deferred struct-page
//! init chunk hand-over ([`handover`]), the hotplug window of background completion
//! ([`window`]), and the virtio-mem request state machine against config-change interrupts
//! ([`vmem`]). Shuttle explores thread schedules at random (each iteration one schedule,
//! switching threads at every model mutex or atomic operation and yield). It was chosen over
//! loom because the code under test is the real allocator and device driver core, plain state
//! behind one lock, which shuttle schedules without instrumenting that code, and an iteration
//! count bounds the run time on a 2-core machine where loom's exhaustive search over these
//! lock sequences does not.

mod handover;
mod vmem;
mod window;
