// A throwaway PKI made with the openssl CLI for TLS tests: a CA and an unrelated second CA, a
// server certificate for 127.0.0.1 and client certificates, all signed by the first CA.
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/support/temp_dir.h"

namespace tripline::testing {

// A CA (and a second, unrelated one), a server certificate for 127.0.0.1 and a client
// certificate, all signed by the first CA.
class TestPki {
 public:
  TestPki() {
    ok_ = MakeCa("ca") && MakeCa("other-ca") &&
          MakeLeaf("server", "collector", "serverAuth", "subjectAltName=IP:127.0.0.1") &&
          MakeLeaf("client", "i-0123456789abcdef0", "clientAuth", "");
  }
  bool ok() const { return ok_; }
  // Another client certificate, <name>.pem / <name>.key, for common name `cn`.
  bool AddClient(const std::string& name, const std::string& cn) {
    return MakeLeaf(name, cn, "clientAuth", "");
  }
  std::string Path(const std::string& name) const { return dir_.Sub(name); }

 private:
  bool Run(const std::string& cmd) {
    return std::system(("cd '" + dir_.path() + "' && " + cmd + " >/dev/null 2>&1").c_str()) == 0;
  }
  bool MakeCa(const std::string& name) {
    return Run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
               name + ".key -out " + name + ".pem -days 1 -subj /CN=" + name);
  }
  bool MakeLeaf(const std::string& name, const std::string& cn, const std::string& usage,
                const std::string& san) {
    std::ofstream ext(dir_.Sub(name + ".ext"));
    ext << "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=" << usage
        << "\n";
    if (!san.empty()) ext << san << "\n";
    ext.close();
    return Run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + name +
               ".key -out " + name + ".csr -subj /CN=" + cn) &&
           Run("openssl x509 -req -in " + name +
               ".csr -CA ca.pem -CAkey ca.key -CAcreateserial "
               "-out " +
               name + ".pem -days 1 -extfile " + name + ".ext");
  }

  TempDir dir_;
  bool ok_ = false;
};

}  // namespace tripline::testing
