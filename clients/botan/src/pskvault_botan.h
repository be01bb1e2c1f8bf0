/*
 * pskvault_botan.h: RFC 9258 imported PSKs from pskvault for Botan 3 TLS.
 *
 * Botan >= 3.12 can take a PSK that was imported elsewhere
 * (Botan::TLS::ExternalPSK(identity, prf, ipskx, imported = true)) and
 * computes its binder with "imp binder", as RFC 9258 requires. With this
 * header a Botan endpoint holds nothing but the ipskx pskvault derived
 * (inside a TPM, an HSM or the soft store) from an EPSK the endpoint never
 * sees, and is still a standard RFC 9258 peer: it completes handshakes with
 * stacks that import the EPSK themselves (tested with GnuTLS 3.8.13 and
 * Botan's own PSKImporter; BoringSSL untested), and with other Botan
 * endpoints fed by pskvault. It cannot talk to stacks that
 * take the ipskx as an ordinary external PSK ("ext binder": OpenSSL, GnuTLS
 * 3.7, stunnel, mbedTLS, and pskvault's C library glue for them); the binders
 * differ, and the server refuses the handshake. docs/CONSUMERS.md says which
 * consumer is which.
 *
 *   auto vault = std::make_shared<pskvault_botan::VaultKeySource>(
 *       pskvault_botan::VaultKeySource::Options{"/run/pskvault/data/pskvault.sock", {}, {}});
 *   pskvault_botan::Target target{pskvault_botan::TLS13, pskvault_botan::SHA256};
 *   auto creds = std::make_shared<pskvault_botan::Credentials>(vault, target);  // a client: add the server node
 *   auto policy = std::make_shared<pskvault_botan::Policy>(target);
 *   Botan::TLS::Server server(callbacks, std::make_shared<Botan::TLS::Session_Manager_Noop>(),
 *                             creds, policy, rng);
 *
 * Server side: for the PskIdentity bytes Botan received, Credentials asks the
 * vault's lookup (the vault decodes them as an ImportedIdentity, checks who
 * asks, the record's state, expiry, target and context) and hands Botan the
 * answer as an imported PSK. Client side: it asks the vault for the offers to
 * a named server node (newest usable generation first) and offers them all.
 * The vault is asked at every handshake, so a revocation, expiry or rotation
 * takes effect on the next one without restarting anything.
 *
 * Policy enforces what the vault's records require, whatever else the
 * application configures: TLS 1.3 only (no TLS 1.2, no DTLS), cipher suites
 * whose hash is the target KDF's only (Botan's server picks the suite before
 * it looks for a PSK, and only looks for PSKs of that suite's hash), no
 * session tickets (a resumption would outlive a revocation). psk_dhe_ke only
 * and no early data are what Botan 3.13 does anyway: its client offers only
 * psk_dhe_ke (src/lib/tls/tls13/msg_client_hello_13.cpp:209), its server
 * accepts a PSK only under psk_dhe_ke (msg_server_hello_13.cpp:322), and it
 * neither sends nor accepts 0-RTT data (so a record that allows early data
 * or psk_ke is still used, with psk_dhe_ke and without 0-RTT).
 *
 * Botan 3 needs C++20.
 */
#ifndef PSKVAULT_BOTAN_H
#define PSKVAULT_BOTAN_H

#include <botan/credentials_manager.h>
#include <botan/secmem.h>
#include <botan/tls_external_psk.h>
#include <botan/tls_policy.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace pskvault_botan {

// RFC 9258 target_protocol and target_kdf code points.
inline constexpr uint16_t TLS13 = 0x0304;
inline constexpr uint16_t DTLS13 = 0xfefc;
inline constexpr uint16_t SHA256 = 0x0001;  // HKDF_SHA256
inline constexpr uint16_t SHA384 = 0x0002;  // HKDF_SHA384

// Target is what a Botan endpoint runs: the protocol (only TLS 1.3: Botan
// 3.13 has no DTLS 1.3) and the target KDF, which fixes the cipher suites'
// hash. A Botan server picks the suite before looking for a PSK, so one
// endpoint serves one KDF.
struct Target {
   uint16_t protocol = TLS13;
   uint16_t kdf = SHA256;
};

// prf_name is Botan's name of the target KDF's hash ("SHA-256", "SHA-384");
// throws std::invalid_argument for an unknown KDF.
std::string prf_name(uint16_t kdf);

// kdf_by_name parses "sha256" / "sha384"; throws std::invalid_argument.
uint16_t kdf_by_name(std::string_view name);

// Key is one imported PSK as the vault hands it out.
struct Key {
   std::vector<uint8_t> imported_identity;  // PskIdentity.identity on the wire
   Botan::secure_vector<uint8_t> ipskx;     // the imported PSK; wiped when freed
   uint16_t kdf = 0;                        // target_kdf of the key
   bool dhe_required = true;                // the record forbids psk_ke
   bool early_data = false;                 // the record allows 0-RTT (unused: Botan has none)
   uint32_t generation = 1;
};

// KeySource is where the keys come from. VaultKeySource asks pskvault's data
// socket at every call; StaticKeySource holds keys in memory (the benchmark's
// baseline, and tests).
class KeySource {
   public:
      virtual ~KeySource() = default;

      // lookup: the key for the PskIdentity bytes a ClientHello carried, for
      // target t; std::nullopt when there is none for this caller, whatever
      // the reason (unknown, revoked, expired, wrong target or context, not
      // allowed). Throws std::runtime_error when the vault cannot be asked.
      virtual std::optional<Key> lookup(std::span<const uint8_t> wire_identity, const Target& t) = 0;

      // offers: the keys a client on this node offers to server node
      // server_node for target t, newest usable generation first.
      virtual std::vector<Key> offers(const std::string& server_node, const Target& t) = 0;
};

// VaultKeySource asks pskvault's data socket through the C client library
// (clients/c, libpskvault): the binary form of lookup and offers, its pool of
// keep-alive connections (safe across threads), the daemon's uid checked with
// SO_PEERCRED before anything is sent (root, our own uid, the user pskvault,
// or Options::daemon_uid, else PSKVAULT_DAEMON_UID).
class VaultKeySource final : public KeySource {
   public:
      struct Options {
         std::string socket;                   // data socket path
         std::optional<std::vector<uint8_t>> context;  // lookup: the context the server requires
         std::optional<uint32_t> daemon_uid;   // trust this daemon uid too
      };

      explicit VaultKeySource(Options opts);
      ~VaultKeySource() override;
      VaultKeySource(const VaultKeySource&) = delete;
      VaultKeySource& operator=(const VaultKeySource&) = delete;

      std::optional<Key> lookup(std::span<const uint8_t> wire_identity, const Target& t) override;
      std::vector<Key> offers(const std::string& server_node, const Target& t) override;

   private:
      struct Impl;
      std::unique_ptr<Impl> m_impl;
};

// StaticKeySource serves fixed keys from memory: what an endpoint would do
// with the ipskx pasted into its configuration. For comparisons and tests.
class StaticKeySource final : public KeySource {
   public:
      void add(Key k) { m_keys.push_back(std::move(k)); }

      std::optional<Key> lookup(std::span<const uint8_t> wire_identity, const Target& t) override;
      std::vector<Key> offers(const std::string& server_node, const Target& t) override;

   private:
      std::vector<Key> m_keys;
};

// Credentials is the Botan::Credentials_Manager that serves PSKs from a
// KeySource. server_node is the node a client offers keys for (unused on a
// server). With imported = false the keys are handed to Botan as ordinary
// external PSKs ("ext binder"), which is what OpenSSL- or GnuTLS-3.7-fed
// pskvault consumers do: only for showing that such a peer cannot meet a
// native importer.
class Credentials : public Botan::Credentials_Manager {
   public:
      Credentials(std::shared_ptr<KeySource> source, Target target, std::string server_node = "",
                  bool imported = true);

      std::vector<Botan::TLS::ExternalPSK> find_preshared_keys(std::string_view host,
                                                               Botan::TLS::Connection_Side whoami,
                                                               const std::vector<std::string>& identities,
                                                               const std::optional<std::string>& prf) override;

      std::optional<Botan::TLS::ExternalPSK> choose_preshared_key(std::string_view host,
                                                                  Botan::TLS::Connection_Side whoami,
                                                                  const std::vector<std::string>& identities,
                                                                  const std::optional<std::string>& prf) override;

      // The last error met asking the source (empty when none): the reason
      // a handshake found no PSK when the vault could not be asked.
      std::string last_error() const;

   private:
      std::optional<Botan::TLS::ExternalPSK> to_psk(Key& k) const;

      std::shared_ptr<KeySource> m_source;
      Target m_target;
      std::string m_server_node;
      bool m_imported;
      mutable std::mutex m_mu;
      std::string m_last_error;
};

// Policy is Botan's default policy narrowed to what pskvault's keys allow.
class Policy : public Botan::TLS::Policy {
   public:
      explicit Policy(Target target);

      bool allow_tls12() const override { return false; }
      bool allow_tls13() const override { return true; }
      bool allow_dtls12() const override { return false; }
      std::vector<std::string> allowed_ciphers() const override;
      std::vector<std::string> allowed_macs() const override { return {"AEAD"}; }
      bool acceptable_ciphersuite(const Botan::TLS::Ciphersuite& suite) const override;
      bool acceptable_protocol_version(Botan::TLS::Protocol_Version version) const override;
      size_t new_session_tickets_upon_handshake_success() const override { return 0; }
      bool reuse_session_tickets() const override { return false; }

   private:
      Target m_target;
};

// hex / unhex helpers for the programs (no key material through them except
// into secure_vector).
std::string to_hex(std::span<const uint8_t> b);
std::vector<uint8_t> from_hex(std::string_view s);  // throws std::invalid_argument

}  // namespace pskvault_botan

#endif
