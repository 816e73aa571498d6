// Orderly shutdown on SIGTERM/SIGINT (and reload on SIGHUP) without work in a signal handler: the
// signals are blocked in every thread and one watcher thread takes them with sigwait and calls the
// callbacks from there.
#pragma once

#include <functional>

namespace tripline {

// Blocks SIGTERM, SIGINT, SIGHUP and SIGPIPE in the calling thread; call first thing in main(), before
// any thread starts, so every thread inherits the mask.
void BlockShutdownSignals();

// Starts the watcher thread. on_stop runs once, on the first SIGTERM or SIGINT; on_reload on each
// SIGHUP (may be empty). The watcher thread is joined by StopSignalWatcher().
void StartSignalWatcher(std::function<void()> on_stop, std::function<void()> on_reload);

// Wakes and joins the watcher thread (safe to call more than once, and without a start).
void StopSignalWatcher();

}  // namespace tripline
