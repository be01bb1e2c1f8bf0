/*
 * pskvault-botan-tool: the Botan consumer's measuring and checking tool.
 *
 *   pskvault-botan-tool bench --server-socket S --client-socket C --server-node NODE
 *                             [--kdf sha256] [--rounds 5] [--handshakes 300]
 *       TLS 1.3 psk_dhe_ke handshakes per second, client and server in this
 *       process over memory (no sockets, one thread), with the server's PSK
 *       (a) asked from the vault's lookup at every handshake (S) and (b) held
 *       in memory, the same ipskx, taken from one lookup at start. Rounds
 *       alternate a and b. The client's keys come from one offers call (C)
 *       and stay in memory for both. Prints one line per round and one
 *       summary line "vault=N/s memory=M/s ratio=R" (medians).
 *
 *   pskvault-botan-tool import --import-epsk FILE --identity-hex H [--context-hex C]
 *                              [--epsk-hash sha256|sha384] [--kdf sha256|sha384]
 *       run Botan's own RFC 9258 importer (Botan::TLS::PSKImporter) and print
 *       "imported_identity=HEX ipskx=HEX": for tests comparing pskvault's
 *       derivation with an independent implementation. Prints the key: a
 *       testing tool, never for production.
 */
#include "example_io.h"
#include "pskvault_botan.h"

#include <botan/auto_rng.h>
#include <botan/tls_client.h>
#include <botan/tls_server.h>
#include <botan/tls_session_manager_noop.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <iostream>

using namespace pskvault_botan;
using namespace pskvault_botan::example;

namespace {

// Pipe is one direction of an in-memory connection.
struct Pipe : Botan::TLS::Callbacks {
      std::vector<uint8_t> out;  // bytes this side emitted, not yet delivered
      bool established = false;

      void tls_emit_data(std::span<const uint8_t> d) override { out.insert(out.end(), d.begin(), d.end()); }

      void tls_record_received(uint64_t /*seq*/, std::span<const uint8_t> /*d*/) override {}

      void tls_alert(Botan::TLS::Alert /*a*/) override {}

      void tls_session_established(const Botan::TLS::Session_Summary& /*s*/) override { established = true; }
};

// one_handshake runs a full handshake in memory; throws on failure.
void one_handshake(const std::shared_ptr<Credentials>& server_creds,
                   const std::shared_ptr<Credentials>& client_creds,
                   const std::shared_ptr<Policy>& policy,
                   const std::shared_ptr<Botan::RandomNumberGenerator>& rng,
                   const std::shared_ptr<Botan::TLS::Session_Manager>& sessions) {
   auto sc = std::make_shared<Pipe>();
   auto cc = std::make_shared<Pipe>();
   Botan::TLS::Server server(sc, sessions, server_creds, policy, rng);
   Botan::TLS::Client client(cc,
                             sessions,
                             client_creds,
                             policy,
                             rng,
                             Botan::TLS::Server_Information(),
                             Botan::TLS::Protocol_Version::TLS_V13);
   for(int step = 0; step < 20 && !(server.is_handshake_complete() && client.is_handshake_complete()); step++) {
      if(!cc->out.empty()) {
         auto d = std::move(cc->out);
         cc->out.clear();
         server.received_data(d);
      }
      if(!sc->out.empty()) {
         auto d = std::move(sc->out);
         sc->out.clear();
         client.received_data(d);
      }
   }
   if(!server.is_handshake_complete() || !client.is_handshake_complete()) {
      throw std::runtime_error("handshake did not complete");
   }
}

double rate(int n,
            const std::shared_ptr<Credentials>& server_creds,
            const std::shared_ptr<Credentials>& client_creds,
            const std::shared_ptr<Policy>& policy,
            const std::shared_ptr<Botan::RandomNumberGenerator>& rng,
            const std::shared_ptr<Botan::TLS::Session_Manager>& sessions) {
   const auto start = std::chrono::steady_clock::now();
   for(int i = 0; i < n; i++) {
      one_handshake(server_creds, client_creds, policy, rng, sessions);
   }
   const std::chrono::duration<double> el = std::chrono::steady_clock::now() - start;
   return n / el.count();
}

double median(std::vector<double> v) {
   std::sort(v.begin(), v.end());
   return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int bench(const Flags& f) {
   Target target{TLS13, kdf_by_name(f.get("kdf", "sha256"))};
   const std::string node = f.get("server-node");
   const int rounds = std::stoi(f.get("rounds", "5"));
   const int n = std::stoi(f.get("handshakes", "300"));

   // The client's keys: one offers call, then memory.
   VaultKeySource client_vault({f.get("client-socket"), std::nullopt, std::nullopt});
   auto client_keys = std::make_shared<StaticKeySource>();
   auto offers = client_vault.offers(node, target);
   if(offers.empty()) {
      throw std::runtime_error("the client vault offers no key for " + node);
   }
   const auto wire = offers.front().imported_identity;
   client_keys->add(std::move(offers.front()));
   auto client_creds = std::make_shared<Credentials>(client_keys, target, node);

   // The server: (a) the vault at every handshake, (b) the same ipskx in memory.
   auto server_vault = std::make_shared<VaultKeySource>(VaultKeySource::Options{f.get("server-socket"), {}, {}});
   auto server_keys = std::make_shared<StaticKeySource>();
   auto k = server_vault->lookup(wire, target);
   if(!k) {
      throw std::runtime_error("the server vault has no key for the offered identity");
   }
   server_keys->add(std::move(*k));
   auto vault_creds = std::make_shared<Credentials>(server_vault, target);
   auto memory_creds = std::make_shared<Credentials>(server_keys, target);

   auto policy = std::make_shared<Policy>(target);
   auto rng = std::make_shared<Botan::AutoSeeded_RNG>();
   auto sessions = std::make_shared<Botan::TLS::Session_Manager_Noop>();

   rate(20, vault_creds, client_creds, policy, rng, sessions);  // warm up
   rate(20, memory_creds, client_creds, policy, rng, sessions);
   std::vector<double> rv, rm;
   for(int r = 0; r < rounds; r++) {
      rv.push_back(rate(n, vault_creds, client_creds, policy, rng, sessions));
      rm.push_back(rate(n, memory_creds, client_creds, policy, rng, sessions));
      std::cout << "round " << r + 1 << ": vault=" << static_cast<long>(rv.back())
                << "/s memory=" << static_cast<long>(rm.back()) << "/s" << std::endl;
   }
   const double mv = median(rv), mm = median(rm);
   std::cout << "vault=" << static_cast<long>(mv) << "/s memory=" << static_cast<long>(mm)
             << "/s ratio=" << mv / mm << " (medians of " << rounds << " rounds of " << n << " handshakes, "
             << prf_name(target.kdf) << ")" << std::endl;
   return 0;
}

int import(const Flags& f) {
   auto src = import_epsk(f);
   const uint16_t kdf = kdf_by_name(f.get("kdf", "sha256"));
   auto keys = src->offers("", Target{TLS13, kdf});
   std::cout << "imported_identity=" << to_hex(keys.at(0).imported_identity)
             << " ipskx=" << to_hex(keys.at(0).ipskx) << std::endl;
   return 0;
}

}  // namespace

int main(int argc, char** argv) {
   try {
      Flags f(argc, argv, {});
      if(f.mode() == "bench") {
         return bench(f);
      }
      if(f.mode() == "import") {
         return import(f);
      }
      std::cerr << "usage: pskvault-botan-tool bench|import [flags] (see the source)" << std::endl;
      return 2;
   } catch(const std::exception& e) {
      std::cerr << "pskvault-botan-tool: error: " << e.what() << std::endl;
      return 1;
   }
}
