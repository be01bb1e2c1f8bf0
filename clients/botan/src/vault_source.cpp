/*
 * vault_source.cpp: VaultKeySource, the data socket client of the Botan
 * consumer.
 *
 * Interim: pskvault's C client library (clients/c) is being written at the
 * same time as this consumer and had not landed when this was; until it has,
 * this file speaks the documented socket protocol (docs/API.md: HTTP/1.1 and
 * JSON over the Unix socket, POST /v1/lookup and /v1/offers) itself, with the
 * same checks the library makes (the daemon's uid by SO_PEERCRED before
 * anything is sent; answers read strictly; the key wiped). It is meant to be
 * replaced by calls into clients/c.
 */
#include "pskvault_botan.h"


#include <algorithm>
#include <cctype>
#include <mutex>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <pwd.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

namespace pskvault_botan {

namespace {

// A string that wipes itself: answers carry the ipskx in hex.
using SecureString = std::basic_string<char, std::char_traits<char>, Botan::secure_allocator<char>>;

const char* kdf_json(uint16_t kdf) {
   return kdf == SHA384 ? "sha384" : "sha256";
}

// ---- a strict reader for the daemon's flat JSON answers ----

// object_spans returns the [begin, end) spans of the objects that open at
// depth 0 of s[from, to); it stops at a bracket that closes an enclosing
// array (to scan an array's elements, start after its '['). Strings are
// skipped with their escapes.
std::vector<std::pair<size_t, size_t>> object_spans(std::string_view s, size_t from, size_t to) {
   std::vector<std::pair<size_t, size_t>> out;
   int depth = 0;
   size_t start = 0;
   for(size_t i = from; i < to; i++) {
      const char c = s[i];
      if(c == '"') {
         for(i++; i < to && s[i] != '"'; i++) {
            if(s[i] == '\\') {
               i++;
            }
         }
         continue;
      }
      if(c == '{' || c == '[') {
         if(depth == 0 && c == '{') {
            start = i;
         }
         depth++;
      } else if(c == '}' || c == ']') {
         if(depth == 0) {
            return out;  // the enclosing array ends
         }
         depth--;
         if(depth == 0 && c == '}') {
            out.emplace_back(start, i + 1);
         }
      }
   }
   if(depth != 0) {
      throw std::runtime_error("vault answer: truncated JSON");
   }
   return out;
}

// field finds "name": at depth 1 of the object span and returns the raw
// value text (a string's content without quotes), or nullopt.
std::optional<std::string_view> field(std::string_view obj, std::string_view name) {
   int depth = 0;
   for(size_t i = 0; i < obj.size(); i++) {
      const char c = obj[i];
      if(c == '{' || c == '[') {
         depth++;
         continue;
      }
      if(c == '}' || c == ']') {
         depth--;
         continue;
      }
      if(c != '"') {
         continue;
      }
      const size_t ks = i + 1;
      for(i++; i < obj.size() && obj[i] != '"'; i++) {
         if(obj[i] == '\\') {
            i++;
         }
      }
      const std::string_view key = obj.substr(ks, i - ks);
      size_t j = i + 1;
      while(j < obj.size() && obj[j] == ' ') {
         j++;
      }
      if(j >= obj.size() || obj[j] != ':') {
         continue;  // a string value, not a key
      }
      j++;
      while(j < obj.size() && obj[j] == ' ') {
         j++;
      }
      if(depth != 1 || key != name) {
         continue;
      }
      if(j < obj.size() && obj[j] == '"') {
         const size_t vs = j + 1;
         size_t k = vs;
         while(k < obj.size() && obj[k] != '"') {
            if(obj[k] == '\\') {
               k++;
            }
            k++;
         }
         return obj.substr(vs, k - vs);
      }
      size_t k = j;
      while(k < obj.size() && obj[k] != ',' && obj[k] != '}' && obj[k] != ']') {
         k++;
      }
      return obj.substr(j, k - j);
   }
   return std::nullopt;
}

Key key_from(std::string_view obj, uint16_t want_kdf) {
   Key k;
   const auto id = field(obj, "imported_identity");
   const auto ipskx = field(obj, "ipskx");
   if(!id || !ipskx || id->empty() || ipskx->empty()) {
      throw std::runtime_error("vault answer lacks imported_identity or ipskx");
   }
   k.imported_identity = from_hex(*id);
   auto raw = from_hex(*ipskx);
   k.ipskx.assign(raw.begin(), raw.end());
   ::explicit_bzero(raw.data(), raw.size());
   k.kdf = want_kdf;
   if(auto kdf = field(obj, "kdf")) {
      k.kdf = kdf_by_name(*kdf);
   }
   if(auto d = field(obj, "psk_dhe_ke_required")) {
      k.dhe_required = *d == "true";
   }
   if(auto e = field(obj, "early_data_allowed")) {
      k.early_data = *e == "true";
   }
   if(auto g = field(obj, "generation")) {
      k.generation = static_cast<uint32_t>(std::strtoul(std::string(*g).c_str(), nullptr, 10));
   }
   const size_t want_len = want_kdf == SHA384 ? 48 : 32;
   if(k.ipskx.size() != want_len) {
      throw std::runtime_error("vault answer: ipskx of the wrong length for the target KDF");
   }
   return k;
}

}  // namespace

struct VaultKeySource::Impl {
      Options opts;
      std::mutex mu;
      int fd = -1;

      void disconnect() {
         if(fd >= 0) {
            ::close(fd);
            fd = -1;
         }
      }

      // trusted_daemon: uid 0, our own uid, the system user pskvault, or one
      // the caller configured (option, or PSKVAULT_DAEMON_UID).
      bool trusted_daemon(uid_t uid) const {
         if(uid == 0 || uid == ::geteuid()) {
            return true;
         }
         if(opts.daemon_uid && uid == *opts.daemon_uid) {
            return true;
         }
         if(const char* env = std::getenv("PSKVAULT_DAEMON_UID"); env != nullptr && *env != '\0') {
            char* end = nullptr;
            const unsigned long v = std::strtoul(env, &end, 10);
            if(end != nullptr && *end == '\0' && v == uid) {
               return true;
            }
         }
         if(const passwd* pw = ::getpwnam("pskvault"); pw != nullptr && pw->pw_uid == uid) {
            return true;
         }
         return false;
      }

      void connect() {
         sockaddr_un a{};
         a.sun_family = AF_UNIX;
         if(opts.socket.size() >= sizeof a.sun_path) {
            throw std::runtime_error("data socket path too long");
         }
         std::memcpy(a.sun_path, opts.socket.c_str(), opts.socket.size() + 1);
         fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
         if(fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            const std::string err = std::strerror(errno);
            disconnect();
            throw std::runtime_error("connect to the vault's data socket " + opts.socket + ": " + err);
         }
         ucred cred{};
         socklen_t len = sizeof cred;
         if(::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            disconnect();
            throw std::runtime_error("SO_PEERCRED on the data socket failed");
         }
         if(!trusted_daemon(cred.uid)) {
            disconnect();
            throw std::runtime_error("the daemon behind " + opts.socket + " runs as uid " + std::to_string(cred.uid) +
                                     ", which is not trusted (set PSKVAULT_DAEMON_UID to allow it)");
         }
         timeval tv{10, 0};
         ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
         ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      }

      // exchange sends one request and reads one answer on the open
      // connection; false when the connection was found closed before any
      // answer byte (the daemon closed it while idle).
      bool exchange(const std::string& req, int& status, SecureString& body) {
         size_t off = 0;
         while(off < req.size()) {
            const ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
            if(n < 0 && errno == EINTR) {
               continue;
            }
            if(n <= 0) {
               return false;
            }
            off += static_cast<size_t>(n);
         }
         SecureString in;
         size_t header_end = std::string::npos;
         size_t content_length = 0;
         char buf[4096];
         for(;;) {
            if(header_end == std::string::npos) {
               header_end = in.find("\r\n\r\n");
               if(header_end != std::string::npos) {
                  const std::string_view head(in.data(), header_end);
                  if(head.substr(0, 9) != "HTTP/1.1 " || head.size() < 12) {
                     throw std::runtime_error("vault answer: not HTTP/1.1");
                  }
                  status = std::atoi(std::string(head.substr(9, 3)).c_str());
                  const auto cl = find_header(head, "content-length");
                  if(!cl) {
                     throw std::runtime_error("vault answer without Content-Length");
                  }
                  content_length = std::strtoul(std::string(*cl).c_str(), nullptr, 10);
                  if(content_length > (1u << 20)) {
                     throw std::runtime_error("vault answer too large");
                  }
               }
            }
            if(header_end != std::string::npos && in.size() >= header_end + 4 + content_length) {
               body.assign(in.data() + header_end + 4, content_length);
               return true;
            }
            ssize_t n;
            do {
               n = ::recv(fd, buf, sizeof buf, 0);
            } while(n < 0 && errno == EINTR);
            if(n <= 0) {
               ::explicit_bzero(buf, sizeof buf);
               if(in.empty()) {
                  return false;
               }
               throw std::runtime_error("vault closed the connection mid-answer");
            }
            in.append(buf, static_cast<size_t>(n));
         }
      }

      static std::optional<std::string_view> find_header(std::string_view head, std::string_view name) {
         size_t pos = head.find("\r\n");
         while(pos != std::string_view::npos) {
            const size_t start = pos + 2;
            const size_t end = head.find("\r\n", start);
            const std::string_view line = head.substr(start, end == std::string_view::npos ? end : end - start);
            const size_t colon = line.find(':');
            if(colon == name.size()) {
               bool same = true;
               for(size_t i = 0; i < colon; i++) {
                  same = same && std::tolower(static_cast<unsigned char>(line[i])) == name[i];
               }
               if(same) {
                  std::string_view v = line.substr(colon + 1);
                  while(!v.empty() && v.front() == ' ') {
                     v.remove_prefix(1);
                  }
                  return v;
               }
            }
            pos = end;
         }
         return std::nullopt;
      }

      // post sends a JSON request and returns status and body, reconnecting
      // once when the kept-alive connection had been closed.
      int post(const std::string& path, const std::string& json, SecureString& body) {
         const std::string req = "POST " + path +
                                 " HTTP/1.1\r\nHost: pskvault\r\nContent-Type: application/json\r\n"
                                 "Content-Length: " +
                                 std::to_string(json.size()) + "\r\n\r\n" + json;
         for(int attempt = 0; attempt < 2; attempt++) {
            if(fd < 0) {
               connect();
            }
            int status = 0;
            try {
               if(exchange(req, status, body)) {
                  return status;
               }
            } catch(...) {
               disconnect();
               throw;
            }
            disconnect();
         }
         throw std::runtime_error("the vault closed the connection");
      }
};

VaultKeySource::VaultKeySource(Options opts) : m_impl(std::make_unique<Impl>()) {
   if(opts.socket.empty()) {
      throw std::invalid_argument("no data socket path");
   }
   m_impl->opts = std::move(opts);
}

VaultKeySource::~VaultKeySource() {
   m_impl->disconnect();
}

static std::string error_code(std::string_view body) {
   auto spans = object_spans(body, 0, body.size());
   if(!spans.empty()) {
      if(auto c = field(body.substr(spans[0].first, spans[0].second - spans[0].first), "code")) {
         return std::string(*c);
      }
   }
   return "unknown";
}

std::optional<Key> VaultKeySource::lookup(std::span<const uint8_t> wire_identity, const Target& t) {
   std::string req = "{\"identity_hex\":\"" + to_hex(wire_identity) + "\",\"protocol\":\"" +
                     (t.protocol == DTLS13 ? "dtls1.3" : "tls1.3") + "\",\"kdf\":\"" + kdf_json(t.kdf) + "\"";
   if(m_impl->opts.context) {
      req += ",\"context_hex\":\"" + to_hex(*m_impl->opts.context) + "\"";
   }
   req += "}";
   std::lock_guard<std::mutex> lock(m_impl->mu);
   SecureString body;
   const int status = m_impl->post("/v1/lookup", req, body);
   if(status == 404) {
      return std::nullopt;  // no_key: unknown, revoked, expired, not allowed... the same answer
   }
   if(status != 200) {
      throw std::runtime_error("vault lookup: HTTP " + std::to_string(status) + " " + error_code(body));
   }
   const std::string_view b(body.data(), body.size());
   auto spans = object_spans(b, 0, b.size());
   if(spans.size() != 1) {
      throw std::runtime_error("vault lookup: answer is not one object");
   }
   Key k = key_from(b.substr(spans[0].first, spans[0].second - spans[0].first), t.kdf);
   if(!std::equal(k.imported_identity.begin(), k.imported_identity.end(), wire_identity.begin(), wire_identity.end())) {
      throw std::runtime_error("vault lookup: answer for another identity");
   }
   return k;
}

std::vector<Key> VaultKeySource::offers(const std::string& server_node, const Target& t) {
   for(char c : server_node) {
      if(c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
         throw std::invalid_argument("server node name holds a character a node id cannot have");
      }
   }
   std::string req = "{\"server\":\"" + server_node + "\",\"protocol\":\"" +
                     (t.protocol == DTLS13 ? "dtls1.3" : "tls1.3") + "\",\"kdf\":\"" + kdf_json(t.kdf) + "\"";
   if(m_impl->opts.context) {
      req += ",\"context_hex\":\"" + to_hex(*m_impl->opts.context) + "\"";
   }
   req += "}";
   std::lock_guard<std::mutex> lock(m_impl->mu);
   SecureString body;
   const int status = m_impl->post("/v1/offers", req, body);
   if(status != 200) {
      throw std::runtime_error("vault offers: HTTP " + std::to_string(status) + " " + error_code(body));
   }
   const std::string_view b(body.data(), body.size());
   const size_t arr = b.find('[');
   if(b.find("\"offers\"") == std::string_view::npos || arr == std::string_view::npos) {
      throw std::runtime_error("vault offers: answer without an offers list");
   }
   std::vector<Key> out;
   for(const auto& [s, e] : object_spans(b, arr + 1, b.size())) {
      out.push_back(key_from(b.substr(s, e - s), t.kdf));
   }
   return out;
}

}  // namespace pskvault_botan
