// A local endpoint script (tests/fakes/*.py) run as a child process on 127.0.0.1:0, in its own
// temp dir; it writes HOST:PORT to --ready-file once listening. SIGTERM when destroyed.
#pragma once

#include <curl/curl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.h"

extern char** environ;

namespace tripline::testing {

class LocalEndpoint {
 public:
  LocalEndpoint(const std::string& script, std::vector<std::string> extra) {
    const std::string ready = dir_.Sub("ready");
    std::vector<std::string> args = {"/usr/bin/python3", script,         "--listen",
                                     "127.0.0.1:0",      "--ready-file", ready};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      pid_ = -1;
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(ready);
      std::string addr;
      if (in && std::getline(in, addr) && !addr.empty()) {
        address_ = addr;
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  // SIGTERM, then SIGKILL if the endpoint has not exited within 10 s: a wedged child must not
  // hang the test binary.
  ~LocalEndpoint() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  LocalEndpoint(const LocalEndpoint&) = delete;
  LocalEndpoint& operator=(const LocalEndpoint&) = delete;

  bool running() const { return !address_.empty(); }
  std::string url() const { return "http://" + address_; }

  // A plain GET, or POST of `post_json`, to one of the endpoint's unsigned test-control paths
  // ("/_tripline/calls"); the answer's body, or "" when the request failed.
  std::string Admin(const std::string& path, const std::string* post_json = nullptr) const {
    CURL* curl = curl_easy_init();
    if (curl == nullptr) return "";
    std::string out;
    const std::string target = url() + path;
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, target.c_str());
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    if (post_json != nullptr) {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, post_json->c_str());
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    }
    curl_easy_setopt(
        curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* user) -> size_t {
          static_cast<std::string*>(user)->append(data, size * n);
          return size * n;
        });
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out);
    const CURLcode rc = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return rc == CURLE_OK ? out : "";
  }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  std::string address_;
};

}  // namespace tripline::testing
