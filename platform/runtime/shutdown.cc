#include "platform/runtime/shutdown.h"

#include <pthread.h>
#include <signal.h>

#include <mutex>
#include <thread>

namespace tripline {
namespace {

std::mutex g_mu;
std::thread g_watcher;

sigset_t WatchedSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);  // used to wake the watcher for StopSignalWatcher
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  sigset_t set = WatchedSignals();
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void StartSignalWatcher(std::function<void()> on_stop, std::function<void()> on_reload) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_watcher.joinable()) return;
  g_watcher = std::thread([on_stop = std::move(on_stop), on_reload = std::move(on_reload)] {
    sigset_t set = WatchedSignals();
    bool stopped = false;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGUSR2) return;
      if (sig == SIGHUP) {
        if (on_reload) on_reload();
        continue;
      }
      if (!stopped) {
        stopped = true;
        if (on_stop) on_stop();
      }
    }
  });
}

void StopSignalWatcher() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_watcher.joinable()) return;
  pthread_kill(g_watcher.native_handle(), SIGUSR2);
  g_watcher.join();
}

}  // namespace tripline
