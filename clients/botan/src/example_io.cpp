#include "example_io.h"

#include <botan/tls_ciphersuite.h>
#include <botan/tls_psk_13.h>
#include <botan/tls_version.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pskvault_botan::example {

void Conn::tls_emit_data(std::span<const uint8_t> data) {
   size_t off = 0;
   while(off < data.size()) {
      const ssize_t n = ::send(m_fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if(n < 0 && errno == EINTR) {
         continue;
      }
      if(n <= 0) {
         write_failed = true;
         return;
      }
      off += static_cast<size_t>(n);
   }
}

void Conn::tls_record_received(uint64_t /*seq*/, std::span<const uint8_t> data) {
   inbox.append(reinterpret_cast<const char*>(data.data()), data.size());
}

void Conn::tls_alert(Botan::TLS::Alert alert) {
   alerts.push_back(alert.type_string());
}

void Conn::tls_session_established(const Botan::TLS::Session_Summary& s) {
   established = true;
   if(const auto& id = s.external_psk_identity()) {
      psk_identity_hex = to_hex(std::span(reinterpret_cast<const uint8_t*>(id->data()), id->size()));
   }
   suite = s.ciphersuite().to_string();
   kex = s.kex_algo();
}

bool Conn::pump(Botan::TLS::Channel& ch) {
   uint8_t buf[16384];
   ssize_t n;
   do {
      n = ::recv(m_fd, buf, sizeof buf, 0);
   } while(n < 0 && errno == EINTR);
   if(n <= 0) {
      return false;
   }
   ch.received_data(std::span(buf, static_cast<size_t>(n)));
   return true;
}

std::optional<std::string> Conn::read_line(Botan::TLS::Channel& ch) {
   for(;;) {
      const auto nl = inbox.find('\n');
      if(nl != std::string::npos) {
         std::string line = inbox.substr(0, nl);
         inbox.erase(0, nl + 1);
         return line;
      }
      if(ch.is_closed_for_reading() || !pump(ch)) {
         return std::nullopt;
      }
   }
}

std::string describe_failure(const std::string& what, const Conn& c, const Credentials* creds) {
   std::string s = what;
   for(const auto& a : c.alerts) {
      s += " [alert: " + a + "]";
   }
   if(creds != nullptr) {
      if(auto e = creds->last_error(); !e.empty()) {
         s += " [key source: " + e + "]";
      }
   }
   return s;
}

Flags::Flags(int argc, char** argv, const std::vector<std::string>& bools) {
   int i = 1;
   if(argc > 1 && std::strncmp(argv[1], "--", 2) != 0) {
      m_mode = argv[1];
      i = 2;
   }
   for(; i < argc; i++) {
      std::string f = argv[i];
      if(f.rfind("--", 0) != 0) {
         throw std::invalid_argument("unexpected argument " + f);
      }
      f = f.substr(2);
      if(std::find(bools.begin(), bools.end(), f) != bools.end()) {
         m_values[f] = "1";
         continue;
      }
      if(i + 1 >= argc) {
         throw std::invalid_argument("flag --" + f + " needs a value");
      }
      m_values[f] = argv[++i];
   }
}

std::string Flags::get(const std::string& name, const std::string& def) const {
   auto it = m_values.find(name);
   return it == m_values.end() ? def : it->second;
}

std::shared_ptr<StaticKeySource> load_static_keys(const std::string& path) {
   const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
   if(fd < 0) {
      throw std::runtime_error("open " + path + ": " + std::strerror(errno));
   }
   struct stat st;
   if(::fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
      ::close(fd);
      throw std::runtime_error(path + ": a key file must not be readable by group or others (chmod 600)");
   }
   Botan::secure_vector<char> text(65536);
   const ssize_t n = ::read(fd, text.data(), text.size());
   ::close(fd);
   if(n <= 0 || static_cast<size_t>(n) >= text.size()) {
      throw std::runtime_error(path + ": empty or too long");
   }
   auto src = std::make_shared<StaticKeySource>();
   std::string_view all(text.data(), static_cast<size_t>(n));
   size_t lineno = 0;
   while(!all.empty()) {
      lineno++;
      const auto nl = all.find('\n');
      std::string_view line = all.substr(0, nl);
      all = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
      if(line.empty()) {
         continue;
      }
      const auto sp1 = line.find(' ');
      const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
      if(sp2 == std::string_view::npos) {
         throw std::runtime_error(path + ":" + std::to_string(lineno) + ": want IMPORTED_IDENTITY_HEX IPSKX_HEX KDF");
      }
      Key k;
      k.imported_identity = from_hex(line.substr(0, sp1));
      auto key = from_hex(line.substr(sp1 + 1, sp2 - sp1 - 1));
      k.ipskx.assign(key.begin(), key.end());
      std::fill(key.begin(), key.end(), 0);
      k.kdf = kdf_by_name(line.substr(sp2 + 1));
      src->add(std::move(k));
   }
   return src;
}

Botan::secure_vector<uint8_t> read_hex_key_file(const std::string& path) {
   const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
   if(fd < 0) {
      throw std::runtime_error("open " + path + ": " + std::strerror(errno));
   }
   Botan::secure_vector<char> text(1024);
   const ssize_t n = ::read(fd, text.data(), text.size());
   ::close(fd);
   if(n <= 0 || static_cast<size_t>(n) >= text.size()) {
      throw std::runtime_error(path + ": empty or too long");
   }
   std::string_view t(text.data(), static_cast<size_t>(n));
   while(!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) {
      t.remove_suffix(1);
   }
   auto raw = from_hex(t);
   Botan::secure_vector<uint8_t> key(raw.begin(), raw.end());
   std::fill(raw.begin(), raw.end(), 0);
   return key;
}

std::shared_ptr<StaticKeySource> import_epsk(const Flags& f) {
   const auto epsk = read_hex_key_file(f.get("import-epsk"));
   const auto identity = from_hex(f.get("identity-hex"));
   const auto context = from_hex(f.get("context-hex"));
   const uint16_t kdf = kdf_by_name(f.get("kdf", "sha256"));
   Botan::TLS::PSKImporter importer(epsk, identity, context, prf_name(kdf_by_name(f.get("epsk-hash", "sha256"))));
   auto psk = importer.derive_imported_psk(Botan::TLS::Protocol_Version::TLS_V13, prf_name(kdf));
   Key k;
   k.imported_identity.assign(psk.identity().begin(), psk.identity().end());
   k.ipskx = psk.extract_master_secret();
   k.kdf = kdf;
   auto src = std::make_shared<StaticKeySource>();
   src->add(std::move(k));
   return src;
}

std::shared_ptr<KeySource> key_source(const Flags& f) {
   if(int(f.has("static-keys")) + int(f.has("data-socket")) + int(f.has("import-epsk")) != 1) {
      throw std::invalid_argument("give exactly one of --data-socket PATH, --static-keys FILE and --import-epsk FILE");
   }
   if(f.has("static-keys")) {
      return load_static_keys(f.get("static-keys"));
   }
   if(f.has("import-epsk")) {
      return import_epsk(f);
   }
   VaultKeySource::Options o;
   o.socket = f.get("data-socket");
   if(f.has("context-hex")) {
      o.context = from_hex(f.get("context-hex"));
   }
   if(f.has("daemon-uid")) {
      o.daemon_uid = static_cast<uint32_t>(std::stoul(f.get("daemon-uid")));
   }
   return std::make_shared<VaultKeySource>(std::move(o));
}

std::pair<std::string, int> split_host_port(const std::string& s) {
   const auto colon = s.rfind(':');
   if(colon == std::string::npos) {
      throw std::invalid_argument("want HOST:PORT, got " + s);
   }
   return {s.substr(0, colon), std::stoi(s.substr(colon + 1))};
}

}  // namespace pskvault_botan::example
