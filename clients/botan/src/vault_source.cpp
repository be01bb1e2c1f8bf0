/*
 * vault_source.cpp: VaultKeySource, the Botan consumer's way to the vault:
 * pskvault's C client library (clients/c, libpskvault: the binary form of
 * lookup and offers, the daemon's uid checked with SO_PEERCRED before
 * anything is sent, keep-alive connections, every key buffer wiped).
 */
#include "pskvault_botan.h"

#include <pskvault.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace pskvault_botan {

namespace {

std::string describe(const char* what, int status, const pskvault_detail& d) {
   std::string s = std::string(what) + ": " + pskvault_strerror(status);
   if(d.code[0] != '\0') {
      s += " (" + std::string(d.code) + ")";
   }
   if(status == PSKVAULT_EUNTRUSTED) {
      s += ": the daemon runs as uid " + std::to_string(d.daemon_uid) + " (set PSKVAULT_DAEMON_UID or --daemon-uid to trust it)";
   }
   return s;
}

// take moves a key out of the library's struct (which the caller clears).
Key take(pskvault_key& k) {
   Key out;
   out.imported_identity.assign(k.imported_identity, k.imported_identity + k.imported_identity_len);
   out.ipskx.assign(k.ipskx, k.ipskx + k.ipskx_len);
   out.kdf = k.kdf;
   out.dhe_required = (k.flags & PSKVAULT_F_DHE_REQUIRED) != 0;
   out.early_data = (k.flags & PSKVAULT_F_EARLY_DATA) != 0;
   out.generation = k.generation;
   return out;
}

}  // namespace

struct VaultKeySource::Impl {
      Options opts;
      pskvault* pv = nullptr;
};

VaultKeySource::VaultKeySource(Options opts) : m_impl(std::make_unique<Impl>()) {
   if(opts.socket.empty()) {
      throw std::invalid_argument("no data socket path");
   }
   m_impl->opts = std::move(opts);
   pskvault_config cfg{};
   cfg.socket_path = m_impl->opts.socket.c_str();
   // A daemon uid to trust besides root, our own and the user pskvault:
   // the option, else PSKVAULT_DAEMON_UID (the variable the Go client and
   // the CLI read; libpskvault takes it only through its config).
   if(!m_impl->opts.daemon_uid) {
      if(const char* env = std::getenv("PSKVAULT_DAEMON_UID"); env != nullptr && *env != '\0') {
         char* end = nullptr;
         const unsigned long v = std::strtoul(env, &end, 10);
         if(end == nullptr || *end != '\0' || v > 0xffffffffUL) {
            throw std::invalid_argument("PSKVAULT_DAEMON_UID is not a uid");
         }
         m_impl->opts.daemon_uid = static_cast<uint32_t>(v);
      }
   }
   if(m_impl->opts.daemon_uid) {
      cfg.daemon_uid_set = 1;
      cfg.daemon_uid = static_cast<uid_t>(*m_impl->opts.daemon_uid);
   }
   if(const int st = pskvault_new(&cfg, &m_impl->pv); st != PSKVAULT_OK) {
      throw std::runtime_error(std::string("libpskvault: ") + pskvault_strerror(st));
   }
}

VaultKeySource::~VaultKeySource() {
   pskvault_free(m_impl->pv);
}

std::optional<Key> VaultKeySource::lookup(std::span<const uint8_t> wire_identity, const Target& t) {
   pskvault_expect expect{};
   expect.protocol = t.protocol;
   expect.kdf = t.kdf;
   if(m_impl->opts.context) {
      expect.has_context = 1;
      expect.context = m_impl->opts.context->data();
      expect.context_len = m_impl->opts.context->size();
   }
   pskvault_key k{};
   pskvault_detail d{};
   const int st = pskvault_lookup(m_impl->pv, wire_identity.data(), wire_identity.size(), &expect, &k, &d);
   if(st == PSKVAULT_ENOKEY) {
      return std::nullopt;  // unknown, revoked, expired, not allowed...: the same answer
   }
   if(st != PSKVAULT_OK) {
      throw std::runtime_error(describe("vault lookup", st, d));
   }
   Key out = take(k);
   pskvault_key_clear(&k);
   return out;
}

std::vector<Key> VaultKeySource::offers(const std::string& server_node, const Target& t) {
   pskvault_key* keys = nullptr;
   size_t n = 0;
   pskvault_detail d{};
   const auto& ctx = m_impl->opts.context;
   const int st = pskvault_offers(m_impl->pv,
                                  server_node.c_str(),
                                  ctx ? ctx->data() : nullptr,
                                  ctx ? ctx->size() : 0,
                                  t.protocol,
                                  t.kdf,
                                  &keys,
                                  &n,
                                  &d);
   if(st != PSKVAULT_OK) {
      throw std::runtime_error(describe("vault offers", st, d));
   }
   std::vector<Key> out;
   for(size_t i = 0; i < n; i++) {
      out.push_back(take(keys[i]));
   }
   pskvault_keys_free(keys, n);
   return out;
}

}  // namespace pskvault_botan
