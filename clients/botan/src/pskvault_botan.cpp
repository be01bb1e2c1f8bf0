/*
 * pskvault_botan.cpp: Credentials, Policy and StaticKeySource (see
 * pskvault_botan.h). VaultKeySource is in vault_source.cpp.
 */
#include "pskvault_botan.h"

#include <botan/tls_ciphersuite.h>
#include <botan/tls_version.h>

#include <stdexcept>

namespace pskvault_botan {

std::string prf_name(uint16_t kdf) {
   switch(kdf) {
      case SHA256:
         return "SHA-256";
      case SHA384:
         return "SHA-384";
      default:
         throw std::invalid_argument("unknown target KDF " + std::to_string(kdf));
   }
}

uint16_t kdf_by_name(std::string_view name) {
   if(name == "sha256") {
      return SHA256;
   }
   if(name == "sha384") {
      return SHA384;
   }
   throw std::invalid_argument("KDF must be sha256 or sha384, not \"" + std::string(name) + "\"");
}

std::string to_hex(std::span<const uint8_t> b) {
   static const char digits[] = "0123456789abcdef";
   std::string s;
   s.reserve(b.size() * 2);
   for(uint8_t c : b) {
      s.push_back(digits[c >> 4]);
      s.push_back(digits[c & 15]);
   }
   return s;
}

static int hexval(char c) {
   if(c >= '0' && c <= '9') {
      return c - '0';
   }
   if(c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
   }
   if(c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
   }
   return -1;
}

std::vector<uint8_t> from_hex(std::string_view s) {
   if(s.size() % 2 != 0) {
      throw std::invalid_argument("odd number of hex digits");
   }
   std::vector<uint8_t> out;
   out.reserve(s.size() / 2);
   for(size_t i = 0; i < s.size(); i += 2) {
      const int hi = hexval(s[i]);
      const int lo = hexval(s[i + 1]);
      if(hi < 0 || lo < 0) {
         throw std::invalid_argument("not hex");
      }
      out.push_back(static_cast<uint8_t>(hi << 4 | lo));
   }
   return out;
}

// ---- StaticKeySource ----

static Key copy_key(const Key& k) {
   Key c;
   c.imported_identity = k.imported_identity;
   c.ipskx = k.ipskx;
   c.kdf = k.kdf;
   c.dhe_required = k.dhe_required;
   c.early_data = k.early_data;
   c.generation = k.generation;
   return c;
}

std::optional<Key> StaticKeySource::lookup(std::span<const uint8_t> wire_identity, const Target& t) {
   for(const auto& k : m_keys) {
      if(k.kdf == t.kdf && std::equal(k.imported_identity.begin(), k.imported_identity.end(), wire_identity.begin(),
                                      wire_identity.end())) {
         return copy_key(k);
      }
   }
   return std::nullopt;
}

std::vector<Key> StaticKeySource::offers(const std::string& /*server_node*/, const Target& t) {
   std::vector<Key> out;
   for(const auto& k : m_keys) {
      if(k.kdf == t.kdf) {
         out.push_back(copy_key(k));
      }
   }
   return out;
}

// ---- Credentials ----

Credentials::Credentials(std::shared_ptr<KeySource> source, Target target, std::string server_node, bool imported) :
      m_source(std::move(source)), m_target(target), m_server_node(std::move(server_node)), m_imported(imported) {
   prf_name(m_target.kdf);  // validate
   if(m_target.protocol != TLS13) {
      throw std::invalid_argument("Botan 3 runs only TLS 1.3 with imported PSKs (no DTLS 1.3)");
   }
}

std::string Credentials::last_error() const {
   std::lock_guard<std::mutex> lock(m_mu);
   return m_last_error;
}

std::optional<Botan::TLS::ExternalPSK> Credentials::to_psk(Key& k) const {
   // The vault answers only for the target asked; a key for another KDF
   // could not work with the suites Policy allows.
   if(k.kdf != m_target.kdf || k.imported_identity.empty() || k.ipskx.empty()) {
      return std::nullopt;
   }
   // Botan compares identities byte for byte; the ImportedIdentity holds zero
   // bytes (its length prefixes), which std::string keeps.
   const std::string identity(k.imported_identity.begin(), k.imported_identity.end());
   return Botan::TLS::ExternalPSK(identity, prf_name(k.kdf), std::move(k.ipskx), m_imported);
}

std::vector<Botan::TLS::ExternalPSK> Credentials::find_preshared_keys(std::string_view /*host*/,
                                                                      Botan::TLS::Connection_Side whoami,
                                                                      const std::vector<std::string>& identities,
                                                                      const std::optional<std::string>& prf) {
   std::vector<Botan::TLS::ExternalPSK> out;
   if(prf.has_value() && prf.value() != prf_name(m_target.kdf)) {
      return out;  // Botan asks for the chosen suite's hash: not ours
   }
   try {
      if(whoami == Botan::TLS::Connection_Side::Server) {
         // identities are the PskIdentity bytes of the ClientHello, in the
         // client's order; some may be resumption tickets, which the vault
         // does not know and answers no_key for.
         for(const auto& id : identities) {
            const std::span<const uint8_t> wire(reinterpret_cast<const uint8_t*>(id.data()), id.size());
            if(auto k = m_source->lookup(wire, m_target)) {
               if(auto psk = to_psk(*k)) {
                  out.push_back(std::move(*psk));
               }
            }
         }
      } else {
         if(m_server_node.empty()) {
            return out;
         }
         for(auto& k : m_source->offers(m_server_node, m_target)) {
            if(!identities.empty() &&
               std::find(identities.begin(),
                         identities.end(),
                         std::string(k.imported_identity.begin(), k.imported_identity.end())) == identities.end()) {
               continue;
            }
            if(auto psk = to_psk(k)) {
               out.push_back(std::move(*psk));
            }
         }
      }
   } catch(const std::exception& e) {
      // The vault could not be asked: no PSK, so no handshake (fail closed).
      std::lock_guard<std::mutex> lock(m_mu);
      m_last_error = e.what();
      return {};
   }
   return out;
}

std::optional<Botan::TLS::ExternalPSK> Credentials::choose_preshared_key(std::string_view host,
                                                                         Botan::TLS::Connection_Side whoami,
                                                                         const std::vector<std::string>& identities,
                                                                         const std::optional<std::string>& prf) {
   if(whoami != Botan::TLS::Connection_Side::Server) {
      auto all = find_preshared_keys(host, whoami, identities, prf);
      if(all.empty()) {
         return std::nullopt;
      }
      return std::move(all.front());
   }
   // A server asks the vault identity by identity and stops at the first it
   // has a key for: one lookup for the usual ClientHello.
   for(const auto& id : identities) {
      auto one = find_preshared_keys(host, whoami, {id}, prf);
      if(!one.empty()) {
         return std::move(one.front());
      }
   }
   return std::nullopt;
}

// ---- Policy ----

Policy::Policy(Target target) : m_target(target) {
   prf_name(m_target.kdf);  // validate
}

std::vector<std::string> Policy::allowed_ciphers() const {
   if(m_target.kdf == SHA384) {
      return {"AES-256/GCM"};  // TLS_AES_256_GCM_SHA384
   }
   return {"AES-128/GCM", "ChaCha20Poly1305"};  // TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256
}

bool Policy::acceptable_ciphersuite(const Botan::TLS::Ciphersuite& suite) const {
   return suite.usable_in_version(Botan::TLS::Protocol_Version::TLS_V13) && suite.prf_algo() == prf_name(m_target.kdf) &&
          Botan::TLS::Policy::acceptable_ciphersuite(suite);
}

bool Policy::acceptable_protocol_version(Botan::TLS::Protocol_Version version) const {
   return version == Botan::TLS::Protocol_Version::TLS_V13;
}

}  // namespace pskvault_botan
